//! The one way every role opens Redis. A role keeps serving from its last
//! view while Redis is away, so no command may wait long, and a connection
//! that broke reconnects by itself (redis' `ConnectionManager`).
//!
//! TLS is the URL's: `rediss://` (with `--redis-ca-cert`, or the system's
//! roots), and a password or ACL user goes in it too
//! (`rediss://user:password@host:port`); [`redacted`] is the form to log.
//!
//! A Sentinel-watched primary is `redis+sentinel://host:port[,host:port]/MASTER`
//! (see [`sentinel`]): [`Connection`] follows a failover by itself.
//!
//! It sits beside `proto` because, like the protobuf contracts, it is wire
//! every role shares; the contracts kept in Redis (`job-queue`,
//! `registry`) are built on it.

pub mod sentinel;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use tracing::{info, warn};

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
    // A host list does not parse as one URL: hide everything before the '@'.
    if let Some(Ok(s)) = sentinel::parse(url) {
        let rest = url.rsplit_once('@').map(|(_, r)| r).unwrap_or(url);
        let scheme = url.split("://").next().unwrap_or_default();
        let creds = if s.userinfo.is_empty() { "" } else { "***@" };
        let rest = rest.strip_prefix(&format!("{scheme}://")).unwrap_or(rest);
        return format!("{scheme}://{creds}{rest}");
    }
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
/// transaction cannot share a multiplexed one). A sentinel URL is an error
/// here: its address is only known by asking, see [`current_client`].
pub fn client(url: &str) -> RedisResult<Client> {
    if let Some(parsed) = sentinel::parse(url) {
        parsed?;
        return Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a redis+sentinel:// URL has no fixed address; use current_client",
        )));
    }
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

/// A client for the node `url` names now: for a sentinel URL, the master
/// the sentinels name at this moment. For dedicated connections that
/// reconnect by calling this again (pub/sub).
pub async fn current_client(url: &str) -> RedisResult<Client> {
    match sentinel::parse(url) {
        Some(parsed) => {
            let s = parsed?;
            let addr = s.resolve().await?;
            client(&s.node_url(&addr))
        }
        None => client(url),
    }
}

/// A reconnecting connection (cheap to clone; clones share it). Over a
/// sentinel URL it also follows the master when it moves.
#[derive(Clone)]
pub struct Connection {
    current: Arc<RwLock<ConnectionManager>>,
    follow: Option<Arc<Follow>>,
}

/// What a sentinel-backed connection needs to move to a new master.
struct Follow {
    url: sentinel::SentinelUrl,
    options: Options,
    /// One re-resolution at a time; more errors meanwhile just wait for it.
    resolving: AtomicBool,
    /// The master address in use, to tell a move from the same answer.
    addr: RwLock<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("redis_conn::Connection")
    }
}

impl Connection {
    fn manager(&self) -> ConnectionManager {
        match self.current.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After an error that a lost master gives, ask the sentinels again in
    /// the background and swap the manager if the master moved. The failing
    /// command is not retried: it may have been applied (an XADD twice is
    /// not the same as once), and every caller already handles Redis
    /// errors by keeping its last view or retrying its own step.
    fn after_error(&self, e: &RedisError) {
        let Some(follow) = &self.follow else { return };
        if !sentinel::master_lost(e) || follow.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let follow = follow.clone();
        let current = self.current.clone();
        tokio::spawn(async move {
            let moved = async {
                let addr = follow.url.resolve().await?;
                let same = follow.addr.read().map(|a| *a == addr).unwrap_or(false);
                if same {
                    return RedisResult::Ok(None);
                }
                // Never wait here for an unreachable node: the next error asks again.
                let options = Options {
                    wait_for_server: false,
                    ..follow.options
                };
                let m = manager_for(&follow.url.node_url(&addr), options).await?;
                Ok(Some((addr, m)))
            };
            match moved.await {
                Ok(Some((addr, m))) => {
                    info!(master = %addr, name = %follow.url.master, "Redis master moved; following it");
                    if let Ok(mut c) = current.write() {
                        *c = m;
                    }
                    if let Ok(mut a) = follow.addr.write() {
                        *a = addr;
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "asking the sentinels for the master failed"),
            }
            follow.resolving.store(false, Ordering::Release);
        });
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.manager().send_packed_command(cmd).await;
            if let Err(e) = &r {
                self.after_error(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self
                .manager()
                .send_packed_commands(pipeline, offset, count)
                .await;
            if let Err(e) = &r {
                self.after_error(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.manager().get_db()
    }
}

/// A reconnecting connection with the default options.
pub async fn connect(url: &str) -> RedisResult<Connection> {
    connect_with(url, Options::default()).await
}

pub async fn connect_with(url: &str, options: Options) -> RedisResult<Connection> {
    let Some(parsed) = sentinel::parse(url) else {
        let m = manager_for(url, options).await?;
        return Ok(Connection {
            current: Arc::new(RwLock::new(m)),
            follow: None,
        });
    };
    let url = parsed?;
    let mut wait = Duration::from_millis(100);
    let (addr, m) = loop {
        let first = async {
            let addr = url.resolve().await?;
            let m = manager_for(&url.node_url(&addr), options).await?;
            RedisResult::Ok((addr, m))
        };
        match first.await {
            Ok(found) => break found,
            Err(e) if options.wait_for_server && unreachable(&e) => {
                warn!(error = %e, "no Redis master through the sentinels yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    };
    Ok(Connection {
        current: Arc::new(RwLock::new(m)),
        follow: Some(Arc::new(Follow {
            url,
            options,
            resolving: AtomicBool::new(false),
            addr: RwLock::new(addr),
        })),
    })
}

async fn manager_for(url: &str, options: Options) -> RedisResult<ConnectionManager> {
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
