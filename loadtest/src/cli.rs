//! The command line: `sb-loadtest …` and `switchboard loadtest …`.

use crate::testserver::{Behaviour, TestServer};
use crate::{LoadConfig, Mode, SweepConfig};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Load against a KServe V2 gRPC server: closed or open loop, sweeps, plans.
#[derive(Debug, Parser)]
#[command(name = "sb-loadtest")]
pub struct Cli {
    #[command(flatten)]
    load: LoadArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[arg(long, global = true, default_value = "http://127.0.0.1:8001")]
    url: String,
    #[arg(long, global = true, default_value = "digits")]
    model: String,
    /// Bearer credential.
    #[arg(long, global = true, env = "SWITCHBOARD_KEY", hide_env_values = true)]
    token: Option<String>,
    /// Pin to a deployment (switchboard-deployment header).
    #[arg(long, global = true)]
    deployment: Option<String>,
    /// Closed loop: requests in flight.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: requests per second, sent on schedule whatever the server does.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop with exponential (Poisson) gaps instead of even ones.
    #[arg(long, global = true)]
    poisson: bool,
    /// HTTP/2 connections (default: one per 16 in flight, at least 1; 4 in open loop).
    #[arg(long, global = true)]
    connections: Option<usize>,
    /// Seconds measured (per window, in sweeps).
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, global = true, default_value_t = 2.0)]
    warmup: f64,
    /// Payload rows from a file (CSV, JSON Lines or NPY), sent in order,
    /// `--batch` rows a request; default: random data of the model's shape.
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Rows per request.
    #[arg(long, global = true, default_value_t = 1)]
    batch: usize,
    /// Send typed contents instead of raw bytes.
    #[arg(long, global = true)]
    typed: bool,
    #[arg(long, global = true)]
    report_json: Option<PathBuf>,
    /// Writes report.json and report.md there.
    #[arg(long, global = true)]
    report_dir: Option<PathBuf>,
    /// Server process ids whose CPU time per request is reported.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// No progress line.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// The latency objective a passing rate must meet.
    #[arg(long, default_value_t = 20.0)]
    slo_p99_ms: f64,
    #[arg(long, default_value_t = 0.001)]
    max_error_rate: f64,
    /// Search range (requests/s).
    #[arg(long, default_value_t = 10.0)]
    lo: f64,
    #[arg(long, default_value_t = 50_000.0)]
    hi: f64,
    #[arg(long, default_value_t = 8)]
    iterations: usize,
    /// Windows per probed rate; all must pass.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Highest open-loop rate whose p99 stays within the SLO, by binary search.
    Sweep(SweepArgs),
    /// Replicas needed for a target rate within the SLO, from a sweep of one replica.
    Plan {
        #[arg(long)]
        target_rate: f64,
        /// Share of each replica's capacity left free.
        #[arg(long, default_value_t = 0.2)]
        headroom: f64,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// A V2 test server with a known service time (or none), for trying the tool.
    ServeTest {
        #[arg(long, default_value = "127.0.0.1:8500")]
        listen: String,
        #[arg(long, default_value_t = 0)]
        service_time_us: u64,
        /// 0 = answer at once, no limit.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
}

impl LoadArgs {
    fn config(&self, mode: Mode) -> Result<LoadConfig> {
        let rows = match &self.data {
            Some(p) => Some(std::sync::Arc::new(crate::data::load_rows(p)?)),
            None => None,
        };
        let connections = self.connections.unwrap_or(match mode {
            Mode::Closed { concurrency } => concurrency.div_ceil(16).max(1),
            Mode::Open { .. } => 4,
        });
        Ok(LoadConfig {
            url: self.url.clone(),
            model: self.model.clone(),
            token: self.token.clone(),
            pin: self.deployment.clone(),
            mode,
            connections,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
            batch: self.batch,
            raw: !self.typed,
            server_pids: self.server_pids.clone(),
            progress: !self.quiet,
            drain: Duration::from_secs(30),
            rows,
        })
    }

    /// `--report-json`, and in `--report-dir` the JSON, Markdown, HDR log
    /// and SVG charts of a run.
    fn write_run(&self, r: &crate::Report) -> Result<String> {
        let json = serde_json::to_string_pretty(r)?;
        if let Some(p) = &self.report_json {
            std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(dir) = &self.report_dir {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("report.json"), &json)?;
            std::fs::write(dir.join("report.md"), r.markdown())?;
            r.write_hdr_log(&dir.join("latency.hlog"))?;
            crate::chart::spectrum(r, &dir.join("latency-spectrum.svg"))
                .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
        }
        Ok(json)
    }

    fn write_sweep(&self, json: &str, sweep: &crate::SweepResult) -> Result<()> {
        if let Some(p) = &self.report_json {
            std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(dir) = &self.report_dir {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("sweep.json"), json)?;
            crate::chart::sweep(sweep, &dir.join("sweep.svg"))
                .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
        }
        Ok(())
    }
}

fn sweep_config(load: &LoadArgs, s: &SweepArgs) -> Result<SweepConfig> {
    let mut base = load.config(Mode::Open {
        rate: s.lo,
        poisson: load.poisson,
    })?;
    base.progress = false;
    Ok(SweepConfig {
        base,
        slo_p99: Duration::from_secs_f64(s.slo_p99_ms / 1e3),
        max_error_rate: s.max_error_rate,
        lo: s.lo,
        hi: s.hi,
        iterations: s.iterations,
        repeats: s.repeats,
        poisson: load.poisson,
    })
}

pub async fn run(cli: Cli) -> Result<()> {
    let a = &cli.load;
    match &cli.cmd {
        None => {
            let mode = match (a.concurrency, a.rate) {
                (_, Some(rate)) if rate > 0.0 => Mode::Open {
                    rate,
                    poisson: a.poisson,
                },
                (_, Some(_)) => bail!("--rate must be positive"),
                (c, None) => Mode::Closed {
                    concurrency: c.unwrap_or(1),
                },
            };
            let report = crate::run(a.config(mode)?).await?;
            println!("{}", a.write_run(&report)?);
        }
        Some(Cmd::Sweep(s)) => {
            let result = crate::sweep(sweep_config(a, s)?).await?;
            let json = serde_json::to_string_pretty(&result)?;
            a.write_sweep(&json, &result)?;
            println!("{json}");
        }
        Some(Cmd::Plan {
            target_rate,
            headroom,
            sweep,
        }) => {
            let result = crate::sweep(sweep_config(a, sweep)?).await?;
            let plan = crate::plan(*target_rate, *headroom, result);
            eprintln!("{}", plan.explanation);
            let json = serde_json::to_string_pretty(&plan)?;
            a.write_sweep(&serde_json::to_string_pretty(&plan.sweep)?, &plan.sweep)?;
            if let Some(dir) = &a.report_dir {
                std::fs::write(dir.join("plan.json"), &json)?;
            }
            println!("{json}");
        }
        Some(Cmd::ServeTest {
            listen,
            service_time_us,
            workers,
        }) => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let b = Behaviour {
                service_time: Duration::from_micros(*service_time_us),
                workers: *workers,
            };
            let server = TestServer::serve(listener, b).await?;
            println!("test server on {}", server.url());
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
