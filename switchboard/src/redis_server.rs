//! A `redis-server` child process on a free port, for `switchboard up` and
//! for tests. Killed when dropped.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct RedisServer {
    /// Held: dropping it kills the server (`kill_on_drop`). Only the
    /// tests' `kill` reads it.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    child: Option<tokio::process::Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one with its data (AOF on) in `dir`, and waits until it answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, free_port()?).await
    }

    pub async fn start_on(dir: &Path, port: u16) -> Result<Self> {
        Self::spawn("redis-server", dir, port, &[]).await
    }

    /// A replica of the server on `primary_port`, on a free port.
    pub async fn start_replica(dir: &Path, primary_port: u16) -> Result<Self> {
        let primary = primary_port.to_string();
        Self::spawn(
            "redis-server",
            dir,
            free_port()?,
            &["--replicaof", "127.0.0.1", &primary],
        )
        .await
    }

    /// A `redis-sentinel` on a free port watching the primary on
    /// `primary_port` as `name`, alone (quorum 1), and quick to fail over:
    /// the primary counts as down after 1 s without an answer.
    pub async fn start_sentinel(dir: &Path, primary_port: u16, name: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        // Sentinel rewrites its config file, so it gets one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile sentinel.log\n\
                 sentinel monitor {name} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 10000\n",
                dir = dir.display()
            ),
        )?;
        let child = tokio::process::Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-sentinel not found: install it (`apt-get install redis-sentinel`, or scripts/setup.sh)"
            ),
            Err(e) => return Err(e).context("starting redis-sentinel"),
        };
        let server = RedisServer {
            child: Some(child),
            port,
        };
        server.wait_ready(Duration::from_secs(10)).await?;
        Ok(server)
    }

    async fn spawn(program: &str, dir: &Path, port: u16, extra: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let child = tokio::process::Command::new(program)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                // A job id answered to a client must survive a crash of
                // Redis itself, so every write reaches the disk first.
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", "redis.log"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server not found: install it (`apt-get install redis-server`, or scripts/setup.sh), \
                 or point at a running Redis with --redis URL"
            ),
            Err(e) => return Err(e).context("starting redis-server"),
        };
        let server = RedisServer {
            child: Some(child),
            port,
        };
        server.wait_ready(Duration::from_secs(10)).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        let client = redis::Client::open(self.url())?;
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > until {
                bail!(
                    "redis-server on port {} did not answer within {within:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, for tests that stop it (SIGSTOP) rather than kill it.
    #[cfg(feature = "test-util")]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL, for fault tests.
    #[cfg(feature = "test-util")]
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
