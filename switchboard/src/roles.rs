//! Server roles as their own processes: `switchboard gateway` and
//! `switchboard worker`. `up` runs the same pieces in one process.

use crate::tls_flags::{ServeTlsArgs, WorkerTlsArgs};
use anyhow::{Context, Result, bail};
use clap::Args;
use engine::OrtOptions;
use gpu_worker::scheduler::SchedulerConfig;
use gpu_worker::server::run::{DeploymentSpec, WorkerConfig};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// gRPC address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub listen: String,
    /// Also serve KServe V2 REST (HTTP/1.1; over TLS with --tls-cert, as
    /// gRPC) on this address (Triton's convention is port 8000).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Redis holding the control plane and the worker registry
    /// (`redis+sentinel://host:port[,host:port]/MASTER` follows a Sentinel failover).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,
    /// Largest request or answer in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_message: usize,
    /// Requests per second per credential (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    #[command(flatten)]
    pub worker_tls: WorkerTlsArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// What every role does on SIGTERM: finish (or hand back) its work, within
/// a bound.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Seconds a draining process may take (SIGTERM → exit) before it stops
    /// with work still in flight; keep it under Kubernetes'
    /// terminationGracePeriodSeconds.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
}

impl DrainArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout.clamp(0.0, 86_400.0))
    }
}

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (batch sizes, queue depth, requests) at
    /// http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    pub fn install(&self) -> Result<()> {
        if let Some(addr) = self.metrics_listen {
            crate::prom::builder()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("serving metrics on {addr}"))?;
            crate::prom::describe();
            tracing::info!(%addr, "Prometheus metrics at /metrics");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// Model instances per deployment, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// Where models run: `cpu`, `cuda:N`, `cuda:N,M` or `cuda:all` (the
    /// instances on each GPU named; `switchboard devices` lists them).
    #[arg(long, default_value = "cpu")]
    pub device: engine::DeviceSpec,
    /// Threads inside one instance's operators.
    #[arg(long, default_value_t = 1)]
    pub intra_threads: usize,
    #[arg(long, default_value_t = 32)]
    pub max_batch_size: usize,
    /// How long the oldest request may wait for a fuller batch (µs), or
    /// `auto`: chosen, with the batch size worth waiting for, from the
    /// model's measured speed and the load, to keep within --slo-p99-ms.
    #[arg(long, default_value = "0")]
    pub max_queue_delay_us: QueueDelay,
    /// With `--max-queue-delay-us auto`: the p99 of the worker's own
    /// latency (queue + compute, ms) that adaptive batching keeps within.
    #[arg(long)]
    pub slo_p99_ms: Option<f64>,
    /// Batch sizes to dispatch at once (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests waiting at most, past which RESOURCE_EXHAUSTED (0 = unbounded).
    #[arg(long, default_value_t = 1024)]
    pub max_queue_size: usize,
    /// Refuse at arrival (RESOURCE_EXHAUSTED, retryable) a request whose
    /// deadline (grpc-timeout or `timeout`) the predicted queue wait would
    /// miss, instead of queueing it until it expires.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub deadline_admission: bool,
}

/// `--max-queue-delay-us`: microseconds, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueDelay {
    Fixed(u64),
    Auto,
}

impl std::str::FromStr for QueueDelay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(QueueDelay::Auto),
            us => us
                .parse()
                .map(QueueDelay::Fixed)
                .map_err(|_| format!("'{us}': expected microseconds or auto")),
        }
    }
}

impl SchedulerArgs {
    pub fn scheduler(&self) -> Result<SchedulerConfig> {
        let (delay, slo_p99) = match (self.max_queue_delay_us, self.slo_p99_ms) {
            (QueueDelay::Fixed(us), None) => (Duration::from_micros(us), None),
            (QueueDelay::Auto, Some(ms)) if ms.is_finite() && ms > 0.0 => {
                (Duration::ZERO, Some(Duration::from_secs_f64(ms / 1e3)))
            }
            (QueueDelay::Auto, Some(ms)) => bail!("--slo-p99-ms {ms}: expected a positive number"),
            (QueueDelay::Auto, None) => {
                bail!("--max-queue-delay-us auto needs --slo-p99-ms (the p99 to keep within)")
            }
            (QueueDelay::Fixed(_), Some(_)) => {
                bail!("--slo-p99-ms goes with --max-queue-delay-us auto")
            }
        };
        Ok(SchedulerConfig {
            max_batch_size: self.max_batch_size,
            max_queue_delay: delay,
            slo_p99,
            preferred_batch_sizes: self.preferred_batch_sizes.clone(),
            max_queue_size: self.max_queue_size,
            instances: self.instances,
            deadline_admission: self.deadline_admission,
            ..SchedulerConfig::default()
        })
    }

    /// How models are opened; the worker sets the device per placement.
    pub fn ort(&self) -> OrtOptions {
        OrtOptions {
            intra_threads: self.intra_threads,
            device: engine::Device::Cpu,
            metered: false,
        }
    }

    /// The devices `--device` names, each checked to exist.
    pub fn devices(&self) -> Result<Vec<engine::Device>> {
        self.device
            .resolve()
            .with_context(|| format!("--device {}", self.device))
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// gRPC address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address the gateway reaches this worker at (default: the listener's).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Registry to join; without it the worker runs stand-alone
    /// (`redis+sentinel://host:port[,host:port]/MASTER` follows a Sentinel failover).
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,
    /// Registry id (default: from the process id and address). A restarted
    /// worker with the same id and address is the same replica to the
    /// gateways, readmitted by their health checks.
    #[arg(long)]
    pub id: Option<String>,
    /// ENDPOINT/DEPLOYMENT=MODEL.onnx (repeatable).
    #[arg(long = "deployment", required = true)]
    pub deployments: Vec<DeploymentSpec>,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Seconds a draining worker keeps serving after it left the registry,
    /// so that gateways (told at once, or at their next 250 ms poll) stop
    /// sending to it before it refuses new calls.
    #[arg(long, default_value_t = 1.0)]
    pub drain_grace: f64,
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

pub async fn gateway(args: GatewayArgs, admin_key: Option<String>) -> Result<()> {
    args.metrics.install()?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let config = gateway::GatewayConfig {
        redis_url: args.redis,
        admin_key,
        max_message: args.max_message,
        rate_limit: args.rate_limit,
        drain_timeout: args.drain.timeout(),
        tls: args.tls.files(),
        worker_tls: args.worker_tls.files(),
        worker_tls_name: args.worker_tls.worker_tls_server_name.clone(),
        ..Default::default()
    };
    let http = match &args.http_listen {
        Some(addr) => Some(bind_http(addr, args.tls.files().is_some()).await?),
        None => None,
    };
    gateway::serve_with_http(config, listener, http, shutdown_signal()).await?;
    Ok(())
}

/// The REST listener, announced on stdout.
pub async fn bind_http(addr: &str, tls: bool) -> Result<gateway::HttpListener> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (--http-listen)"))?;
    let scheme = if tls { "https" } else { "http" };
    println!(
        "gateway serving KServe V2 REST on {scheme}://{}",
        l.local_addr()?
    );
    Ok(gateway::HttpListener(l))
}

pub async fn worker(args: WorkerArgs) -> Result<()> {
    args.metrics.install()?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let devices = args.scheduler.devices()?;
    println!("worker listening on {}", listener.local_addr()?);
    let config = WorkerConfig {
        deployments: args.deployments,
        scheduler: args.scheduler.scheduler()?,
        ort: args.scheduler.ort(),
        devices,
        redis_url: args.redis,
        advertise: args.advertise,
        id: args.id,
        drain_timeout: args.drain.timeout(),
        drain_grace: Duration::from_secs_f64(args.drain_grace.clamp(0.0, 3600.0)),
        tls: args.tls.files(),
        ..Default::default()
    };
    gpu_worker::server::run::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// How a batcher sizes and guards its work; shared by `batcher` and `up`.
#[derive(Debug, Clone, Args)]
pub struct BatchTuning {
    /// Memory a mini-batch may use (e.g. 64MiB, 2GiB); default: what the
    /// device has free.
    #[arg(long, value_parser = engine::parse_bytes)]
    pub batch_memory_budget: Option<u64>,
    /// Share of the budget that `mini_batch_size: auto` aims at.
    #[arg(long, default_value_t = 0.9)]
    pub batch_utilisation: f64,
    /// Hard cap on the engine's allocations (simulates a smaller device:
    /// runs over it fail and their batch is halved).
    #[arg(long, value_parser = engine::parse_bytes)]
    pub batch_memory_limit: Option<u64>,
    /// Largest batch `auto` may choose (on a CPU, larger batches only cost
    /// cache misses).
    #[arg(long, default_value_t = 16_384)]
    pub batch_max_auto: usize,
    /// Seconds a shard may go without its batcher's heartbeat before
    /// another batcher takes it over.
    #[arg(long, default_value_t = 30.0)]
    pub visibility_timeout: f64,
    /// Where remote (object-store) inputs are staged and outputs written
    /// before upload; default: a folder of the process's own under the
    /// OS temp dir.
    #[arg(long)]
    pub cache_dir: Option<std::path::PathBuf>,
}

impl BatchTuning {
    pub fn config(
        &self,
        redis_url: &str,
        device: engine::Device,
        intra_threads: usize,
    ) -> batcher::BatcherConfig {
        batcher::BatcherConfig {
            redis_url: redis_url.to_string(),
            device,
            memory_budget: self.batch_memory_budget,
            utilisation: self.batch_utilisation,
            memory_limit: self.batch_memory_limit,
            max_auto_batch: self.batch_max_auto.max(1),
            visibility_timeout: Duration::from_secs_f64(self.visibility_timeout.max(0.1)),
            intra_threads,
            cache_dir: self.cache_dir.clone(),
            ..batcher::BatcherConfig::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BatcherArgs {
    /// Redis holding the job queue
    /// (`redis+sentinel://host:port[,host:port]/MASTER` follows a Sentinel failover).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,
    /// Consumer name (default: from the process id); unique per process.
    #[arg(long)]
    pub id: Option<String>,
    /// Where models run: `cpu` or `cuda:N` (one device per batcher).
    #[arg(long, default_value = "cpu")]
    pub device: engine::DeviceSpec,
    /// Threads inside one model run.
    #[arg(long, default_value_t = 1)]
    pub intra_threads: usize,
    #[command(flatten)]
    pub tuning: BatchTuning,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics and the probes
    /// /live and /ready (200 while the batcher takes work, 503 otherwise).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub async fn batcher(args: BatcherArgs) -> Result<()> {
    let mut config =
        args.tuning
            .config(&args.redis, args.device.resolve_one()?, args.intra_threads);
    if let Some(id) = args.id {
        config.id = id;
    }
    config.drain_timeout = args.drain.timeout();
    if let Some(addr) = args.metrics_listen {
        let bound = crate::probes::serve(addr, config.ready.clone()).await?;
        println!("batcher probes on http://{bound} (/live, /ready, /metrics)");
    }
    println!(
        "batcher {} reading jobs from {}",
        config.id,
        redis_conn::redacted(&args.redis)
    );
    batcher::run(config, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::SchedulerArgs;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: SchedulerArgs,
    }

    fn scheduler(args: &[&str]) -> anyhow::Result<gpu_worker::scheduler::SchedulerConfig> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        cli.s.scheduler()
    }

    #[test]
    fn queue_delay_is_microseconds_or_auto_with_an_slo() {
        let c = scheduler(&["--max-queue-delay-us", "250"]).unwrap();
        assert_eq!(
            (c.max_queue_delay, c.slo_p99),
            (Duration::from_micros(250), None)
        );
        let c = scheduler(&["--max-queue-delay-us", "auto", "--slo-p99-ms", "7.5"]).unwrap();
        assert_eq!(c.slo_p99, Some(Duration::from_micros(7500)));
        let e = scheduler(&["--max-queue-delay-us", "auto"]).unwrap_err();
        assert!(e.to_string().contains("needs --slo-p99-ms"), "{e}");
        let e = scheduler(&["--slo-p99-ms", "5"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("goes with --max-queue-delay-us auto"),
            "{e}"
        );
        let e = scheduler(&["--max-queue-delay-us", "auto", "--slo-p99-ms", "0"]).unwrap_err();
        assert!(e.to_string().contains("positive"), "{e}");
        let e = scheduler(&["--max-queue-delay-us", "soon"]).unwrap_err();
        assert!(e.to_string().contains("microseconds or auto"), "{e}");
    }
}
