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
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        server.wait_ready(Duration::from_secs(10), dir).await?;
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
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        server.wait_ready(Duration::from_secs(10), dir).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, within: Duration, dir: &Path) -> Result<()> {
        let until = Instant::now() + within;
        let client = redis::Client::open(self.url())?;
        loop {
            // A server that exited (a port taken, a bad flag) will never
            // answer: say why from its log rather than wait out the time.
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!(
                    "redis on port {} exited ({status}): {}",
                    self.port,
                    log_tail(dir)
                );
            }
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

/// The last lines of a server's log in `dir` (`redis.log`, or
/// `sentinel.log`), for an error message.
fn log_tail(dir: &Path) -> String {
    ["redis.log", "sentinel.log"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .map(|log| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(5)..].join(" | ")
        })
        .unwrap_or_else(|| "no log".into())
}

/// A port nothing listens on right now, below the kernel's ephemeral range
/// where one exists. A client that keeps reconnecting to a port in that
/// range while no server is there (a batcher before its Redis, clients
/// across a Redis restart) can be handed that very port as its own source
/// port and connect to itself (TCP simultaneous open); the server then
/// cannot bind it. Ports outside the range are never handed out that way.
pub fn free_port() -> Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let low = ephemeral_low().unwrap_or(0);
    if low > 10_000 {
        // Spread the start by process and time so parallel test binaries
        // rarely probe the same ports; bind proves each one free.
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        let span = u32::from(low) - 10_000;
        for _ in 0..64 {
            let step = NEXT.fetch_add(7919, std::sync::atomic::Ordering::Relaxed);
            let port = 10_000 + (seed.wrapping_add(step) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
