use anyhow::{Context, Result};

// glibc malloc showed up contended under load (many small h2/prost buffers
// freed on other threads); mimalloc's per-thread heaps avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use switchboard::commands::{
    self, Conn, DeploymentCmd, EndpointCmd, InvokeArgs, KeysCmd, TokenCmd,
};
use switchboard::jobs_cmd::{self, JobCmd};
use switchboard::roles::{self, BatcherArgs, GatewayArgs, WorkerArgs};
use switchboard::up::{self, UpArgs};

/// Switchboard: model serving — real-time behind a gRPC gateway, batch through Redis.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    /// Async runtime threads (default: half the cores, at least one; the
    /// other half is left to model instances, which run on their own threads).
    #[arg(long, global = true, env = "SWITCHBOARD_THREADS")]
    threads: Option<usize>,
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
    #[command(subcommand)]
    Job(JobCmd),
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    #[command(subcommand)]
    Deployment(DeploymentCmd),
    /// Set weights: `switchboard traffic digits blue=90 green=10`.
    Traffic {
        endpoint: String,
        #[arg(required = true)]
        weights: Vec<String>,
    },
    /// Copy PERCENT of requests to a shadow deployment (0 turns it off).
    Mirror {
        endpoint: String,
        deployment: String,
        percent: u32,
    },
    #[command(subcommand)]
    Keys(KeysCmd),
    #[command(subcommand)]
    Token(TokenCmd),
    /// Score rows on an endpoint.
    Invoke(InvokeArgs),
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
}

async fn run(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let admin_key = std::env::var("SWITCHBOARD_ADMIN_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    match cli.cmd {
        Cmd::Up(a) => up::up(a, admin_key).await,
        Cmd::Gateway(a) => roles::gateway(a, admin_key).await,
        Cmd::Worker(a) => roles::worker(a).await,
        Cmd::Batcher(a) => roles::batcher(a).await,
        Cmd::Job(c) => jobs_cmd::job(&cli.conn, c).await,
        Cmd::Endpoint(c) => commands::endpoint(&cli.conn, c).await,
        Cmd::Deployment(c) => commands::deployment(&cli.conn, c).await,
        Cmd::Traffic { endpoint, weights } => commands::traffic(&cli.conn, endpoint, weights).await,
        Cmd::Mirror {
            endpoint,
            deployment,
            percent,
        } => commands::mirror(&cli.conn, endpoint, deployment, percent).await,
        Cmd::Keys(c) => commands::keys(&cli.conn, c).await,
        Cmd::Token(c) => commands::token(&cli.conn, c).await,
        Cmd::Invoke(a) => commands::invoke(&cli.conn, a).await,
        Cmd::Loadtest { args } => {
            use clap::Parser as _;
            // The gateway and the key come from switchboard's global flags or
            // their environment unless the load tool's own flags name them
            // (given twice, clap would refuse the command).
            let given = |flag: &str| {
                args.iter()
                    .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
            };
            let mut argv = vec!["switchboard loadtest".to_string()];
            if !given("--url") {
                argv.extend(["--url".to_string(), cli.conn.url.clone()]);
            }
            if let Some(k) = cli.conn.key.as_ref().filter(|_| !given("--token")) {
                argv.extend(["--token".to_string(), k.clone()]);
            }
            argv.extend(args);
            loadtest::cli::run(loadtest::cli::Cli::parse_from(argv)).await
        }
    }
}
