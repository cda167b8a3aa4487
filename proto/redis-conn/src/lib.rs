//! The one way every role opens Redis. A role keeps serving from its last
//! view while Redis is away, so no command may wait long, and a connection
//! that broke reconnects by itself (redis' `ConnectionManager`).
//!
//! TLS is the URL's: `rediss://` (with `--redis-ca-cert`, or the system's
//! roots), and a password or ACL user goes in it too
//! (`rediss://user:password@host:port`); [`redacted`] is the form to log.
//!
//! It sits beside `proto` because, like the protobuf contracts, it is wire
//! every role shares; the contracts kept in Redis (`job-queue`,
//! `registry`) are built on it.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use tracing::warn;

pub use redis::{Client, RedisError, RedisResult};

/// The CA (PEM) that `rediss://` servers' certificates chain to, for the
/// whole process: every role has one Redis.
static CA_CERT: OnceLock<Vec<u8>> = OnceLock::new();

/// Trust the CA in `path` for `rediss://` URLs instead of the system's
/// roots. Call once, at start; a second call keeps the first CA.
pub fn use_ca_cert(path: &Path) -> std::io::Result<()> {
    let pem = std::fs::read(path)?;
    let _ = CA_CERT.set(pem);
    Ok(())
}

/// `url` with its password replaced, for logs and messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(unparsable Redis URL)".to_string(),
    }
}

/// How a connection waits.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long one command may wait for its answer.
    pub response_timeout: Duration,
    /// Keep trying (with backoff) while the server cannot be reached at
    /// start, instead of failing: for roles that have nothing to do without
    /// Redis and are often started before it (batchers).
    pub wait_for_server: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            response_timeout: Duration::from_secs(2),
            wait_for_server: false,
        }
    }
}

/// A client for `url`, for the rare dedicated connection (a WATCH
/// transaction cannot share a multiplexed one).
pub fn client(url: &str) -> RedisResult<Client> {
    if !url.starts_with("rediss://") {
        return Client::open(url);
    }
    // The redis crate builds its rustls config from the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match CA_CERT.get() {
        Some(ca) => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => Client::open(url),
    }
}

/// A reconnecting connection with the default options.
pub async fn connect(url: &str) -> RedisResult<ConnectionManager> {
    connect_with(url, Options::default()).await
}

pub async fn connect_with(url: &str, options: Options) -> RedisResult<ConnectionManager> {
    let client = client(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let mut wait = Duration::from_millis(100);
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if options.wait_for_server && unreachable(&e) => {
                warn!(error = %e, "Redis unreachable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_timeout()
}
