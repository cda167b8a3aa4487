//! Server roles as their own processes: `switchboard gateway` and
//! `switchboard worker`. `up` runs the same pieces in one process.

use anyhow::{Context, Result};
use clap::Args;
use gpu_worker::engine::OrtOptions;
use gpu_worker::scheduler::SchedulerConfig;
use gpu_worker::server::run::{DeploymentSpec, WorkerConfig};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// gRPC address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub listen: String,
    /// Redis holding the control plane and the worker registry.
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
    pub metrics: MetricsArgs,
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
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("serving metrics on {addr}"))?;
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
    /// Where models run: `cpu`, or `cuda:N` when built with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: gpu_worker::engine::Device,
    /// Threads inside one instance's operators.
    #[arg(long, default_value_t = 1)]
    pub intra_threads: usize,
    #[arg(long, default_value_t = 32)]
    pub max_batch_size: usize,
    /// How long the oldest request may wait for a fuller batch (µs).
    #[arg(long, default_value_t = 0)]
    pub max_queue_delay_us: u64,
    /// Batch sizes to dispatch at once (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests waiting at most, past which RESOURCE_EXHAUSTED (0 = unbounded).
    #[arg(long, default_value_t = 1024)]
    pub max_queue_size: usize,
}

impl SchedulerArgs {
    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            max_batch_size: self.max_batch_size,
            max_queue_delay: Duration::from_micros(self.max_queue_delay_us),
            preferred_batch_sizes: self.preferred_batch_sizes.clone(),
            max_queue_size: self.max_queue_size,
            instances: self.instances,
            ..SchedulerConfig::default()
        }
    }

    pub fn ort(&self) -> OrtOptions {
        OrtOptions {
            intra_threads: self.intra_threads,
            device: self.device,
        }
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
    /// Registry to join; without it the worker runs stand-alone.
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
        ..Default::default()
    };
    gateway::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}

pub async fn worker(args: WorkerArgs) -> Result<()> {
    args.metrics.install()?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("worker listening on {}", listener.local_addr()?);
    let config = WorkerConfig {
        deployments: args.deployments,
        scheduler: args.scheduler.scheduler(),
        ort: args.scheduler.ort(),
        redis_url: args.redis,
        advertise: args.advertise,
        id: args.id,
        ..Default::default()
    };
    gpu_worker::server::run::serve(config, listener, shutdown_signal()).await?;
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
