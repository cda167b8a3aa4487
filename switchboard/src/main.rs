use anyhow::{Context, Result};

// glibc malloc showed up contended under load (many small h2/prost buffers
// freed on other threads); mimalloc's per-thread heaps avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use switchboard::commands::{
    self, Conn, DeploymentCmd, EndpointCmd, Group, InvokeArgs, KeysCmd, MirrorArgs, TokenCmd,
    TrafficArgs,
};
use switchboard::jobs_cmd::{self, JobArgs};
use switchboard::roles::{self, BatcherArgs, GatewayArgs, WorkerArgs};
use switchboard::telemetry::{self, LogFormat, TraceArgs};
use switchboard::up::{self, UpArgs};

/// Switchboard: model serving — real-time behind a gRPC gateway, batch through Redis.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    /// Async runtime threads (default: half the cores, at least one; the
    /// other half is left to model instances, which run on their own threads).
    #[arg(long, global = true, env = "SWITCHBOARD_THREADS")]
    threads: Option<usize>,
    /// CA certificate (PEM) that a `rediss://` Redis's certificate chains
    /// to, for every role; default: the system's roots.
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS_CA_CERT")]
    redis_ca_cert: Option<std::path::PathBuf>,
    /// Log lines as text, or as one JSON object a line (for log shippers).
    #[arg(long, global = true, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    traces: TraceArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Gateway + worker + batcher (+ Redis) in one process, with the demo endpoint.
    Up(UpArgs),
    /// Run the gateway role.
    Gateway(GatewayArgs),
    /// Run a worker role.
    Worker(WorkerArgs),
    /// Run a batcher role: batch jobs from the Redis queue.
    Batcher(BatcherArgs),
    /// Batch scoring jobs: submit, status, list, cancel, watch.
    Job(JobArgs),
    /// Endpoints: create, update, list, show, delete.
    Endpoint(Group<EndpointCmd>),
    /// Deployments of an endpoint: create, delete.
    Deployment(Group<DeploymentCmd>),
    /// Set weights: `switchboard traffic digits blue=90 green=10`.
    Traffic(TrafficArgs),
    /// Copy PERCENT of requests to a shadow deployment (0 turns it off).
    Mirror(MirrorArgs),
    /// An endpoint's keys: show fingerprints, regenerate.
    Keys(Group<KeysCmd>),
    /// Expiring tokens for endpoints in `token` mode.
    Token(Group<TokenCmd>),
    /// Score rows on an endpoint.
    Invoke(InvokeArgs),
    /// grpc.health.v1 Check of a gateway or worker: exits 0 when SERVING,
    /// 1 otherwise (for exec probes).
    Health(switchboard::health_cmd::HealthArgs),
    /// The GPUs this machine's workers and batchers may use (the CUDA
    /// driver's, or SWITCHBOARD_SIMULATED_GPUS's); fails saying why when
    /// there are none.
    Devices(switchboard::output::OutputArgs),
    /// Load test a V2 server (see `switchboard loadtest --help`): closed or
    /// open loop, `sweep`, `plan`.
    #[command(disable_help_flag = true)]
    Loadtest {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Libraries that build their own rustls configs find ring here, also in
    // builds where a second provider is compiled in (`cloud`: aws-lc-rs).
    client::proto::tls::install_default_provider();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.unwrap_or(cores / 2).max(1);
    // One thread gets the current-thread runtime, not a one-worker pool: its
    // tasks run in wake order (no LIFO slot, no hand-off from the main
    // thread), so the answers one read wakes are written out together. At
    // 16 in flight through the gateway this cut server CPU per request by
    // a fifth (BENCHMARKS.md).
    let mut rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    rt.enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
        .map_err(tls_hint)
}

/// A TLS server answers a plaintext HTTP/2 client with a TLS alert, which
/// h2 reads as a frame far over the size limit: name the likely cause.
fn tls_hint(e: anyhow::Error) -> anyhow::Error {
    if format!("{e:#}").contains("frame with invalid size") {
        e.context(
            "the server did not speak plaintext HTTP/2: if it serves TLS, use an https:// URL \
             (and --ca-cert for a private CA)",
        )
    } else {
        e
    }
}

async fn run(cli: Cli) -> Result<()> {
    // The name each server role has in traces.
    let service = match &cli.cmd {
        Cmd::Up(_) => Some("switchboard"),
        Cmd::Gateway(_) => Some("switchboard-gateway"),
        Cmd::Worker(_) => Some("switchboard-worker"),
        Cmd::Batcher(_) => Some("switchboard-batcher"),
        _ => None,
    };
    let telemetry = telemetry::init(cli.log_format, &cli.traces, service)?;
    let result = run_command(cli).await;
    telemetry.shutdown().await;
    result
}

async fn run_command(cli: Cli) -> Result<()> {
    if let Some(ca) = &cli.redis_ca_cert {
        redis_conn::use_ca_cert(ca).with_context(|| format!("--redis-ca-cert {}", ca.display()))?;
    }
    let admin_key = std::env::var("SWITCHBOARD_ADMIN_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    match cli.cmd {
        Cmd::Up(a) => up::up(a, admin_key).await,
        Cmd::Gateway(a) => roles::gateway(a, admin_key).await,
        Cmd::Worker(a) => roles::worker(a).await,
        Cmd::Batcher(a) => roles::batcher(a).await,
        Cmd::Job(a) => jobs_cmd::job(a).await,
        Cmd::Endpoint(a) => commands::endpoint(a).await,
        Cmd::Deployment(a) => commands::deployment(a).await,
        Cmd::Traffic(a) => commands::traffic(a).await,
        Cmd::Mirror(a) => commands::mirror(a).await,
        Cmd::Keys(a) => commands::keys(a).await,
        Cmd::Token(a) => commands::token(a).await,
        Cmd::Invoke(a) => commands::invoke(a).await,
        Cmd::Devices(o) => {
            let list = engine::gpus().and_then(|g| g.list())?;
            switchboard::output::devices(&list).print(o.output);
            Ok(())
        }
        Cmd::Health(a) => {
            if switchboard::health_cmd::health(a).await {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Cmd::Loadtest { args } => {
            use clap::Parser as _;
            // Every argument goes to the load tool, whose own --url and
            // --token are the flags here. Absent, they come from
            // SWITCHBOARD_URL and SWITCHBOARD_KEY like the other client
            // commands' (passed only then: given twice, clap would refuse).
            let conn = Conn::from_env()?;
            let given = |flag: &str| {
                args.iter()
                    .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
            };
            let mut argv = vec!["switchboard loadtest".to_string()];
            if !given("--url") {
                argv.extend(["--url".to_string(), conn.url]);
            }
            if let Some(k) = conn.key.filter(|_| !given("--token")) {
                argv.extend(["--token".to_string(), k]);
            }
            argv.extend(args);
            loadtest::cli::run(loadtest::cli::Cli::parse_from(argv)).await
        }
    }
}
