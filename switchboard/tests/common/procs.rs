//! Roles as child processes, stopped with real signals: what a rolling
//! update or a scale-down does to them.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// SIGTERM, as Kubernetes sends it.
pub fn sigterm(child: &Child) {
    let pid = child.id().expect("child still running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -TERM {pid}");
}

/// Its exit status, failing the test if it is still running after `within`.
pub async fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("process still running after {within:?}"))
        .expect("wait")
}

/// A port nothing listens on right now (outside the ephemeral range: see
/// `redis_server::free_port`).
pub fn free_port() -> u16 {
    switchboard::redis_server::free_port().expect("free port")
}

/// `switchboard ARGS…` with logs at warn, output discarded.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("SWITCHBOARD_ADMIN_KEY", super::ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard")
}

/// A worker process serving `ENDPOINT/DEPLOYMENT` with a model file from
/// models/, on a port it picks, in the registry at `redis`.
pub fn spawn_worker(
    redis: &str,
    endpoint: &str,
    deployment: &str,
    model: &str,
    extra: &[&str],
) -> Child {
    let spec = format!(
        "{endpoint}/{deployment}={}",
        super::models().join(model).display()
    );
    let mut args = vec![
        "worker",
        "--listen",
        "127.0.0.1:0",
        "--redis",
        redis,
        "--deployment",
        &spec,
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Waits for `check` with a deadline; returns how long it took.
pub async fn within<F, Fut>(what: &str, limit: Duration, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    super::wait_until(what, limit, check).await;
    start.elapsed()
}

/// Like `wait_until`, polling every `every`: for checks that would
/// otherwise add load to what the test measures.
pub async fn wait_every<F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}
