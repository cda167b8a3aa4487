use anyhow::Result;
use clap::Parser;
use loadtest::{LoadConfig, run_closed_loop};
use std::time::Duration;

/// Closed-loop load against a KServe V2 gRPC server.
#[derive(Debug, Parser)]
#[command(name = "sb-loadtest")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    url: String,
    #[arg(long, default_value = "digits")]
    model: String,
    /// Bearer credential.
    #[arg(long, env = "SWITCHBOARD_KEY")]
    token: Option<String>,
    /// Pin to a deployment (switchboard-deployment header).
    #[arg(long)]
    deployment: Option<String>,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// HTTP/2 connections (default: one per 16 in flight).
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Send typed contents instead of raw bytes.
    #[arg(long)]
    typed: bool,
    #[arg(long)]
    report_json: Option<std::path::PathBuf>,
    /// Server process ids whose CPU time per request is reported.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let cfg = LoadConfig {
        url: a.url,
        model: a.model,
        token: a.token,
        pin: a.deployment,
        concurrency: a.concurrency,
        connections: a.connections.unwrap_or(a.concurrency.div_ceil(16)),
        duration: Duration::from_secs_f64(a.duration),
        warmup: Duration::from_secs_f64(a.warmup),
        batch: a.batch,
        raw: !a.typed,
        server_pids: a.server_pids,
    };
    let report = run_closed_loop(cfg).await?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = a.report_json {
        std::fs::write(&p, &json)?;
    }
    println!("{json}");
    Ok(())
}
