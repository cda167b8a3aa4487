//! The command line: `sb-loadtest …` and `switchboard loadtest …`.

use crate::config::{LoadConfig, Mode};
use crate::sweep::SweepConfig;
use crate::testserver::{Behaviour, TestServer};
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
    /// grpc, or http: KServe V2 REST (binary tensors; JSON data with
    /// --typed), at the REST address (`up`: http://127.0.0.1:8000).
    #[arg(long, global = true, default_value = "grpc", value_parser = parse_protocol)]
    protocol: crate::config::Protocol,
    #[arg(long, global = true, default_value = "digits")]
    model: String,
    /// Bearer credential.
    #[arg(long, global = true, env = "SWITCHBOARD_KEY", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) an `https://` URL's certificate chains to;
    /// default: the system's roots.
    #[arg(long, global = true, env = "SWITCHBOARD_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Pin to a deployment (switchboard-deployment header).
    #[arg(long, global = true)]
    deployment: Option<String>,
    /// Closed loop: requests in flight.
    #[arg(long, global = true, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: requests per second, sent on schedule whatever the server does.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Open loop with exponential (Poisson) gaps instead of even ones.
    #[arg(long, global = true)]
    poisson: bool,
    /// HTTP/2 connections (default: one per 16 in flight, at least 1; 4 in open loop).
    #[arg(long, global = true)]
    connections: Option<usize>,
    /// Time measured (per window, in sweeps): 10 (seconds), 10s, 500ms, 2m, 1m30s.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Time run before measuring, in the same forms as --duration.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
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
    /// Roles' Prometheus endpoints (http://HOST:PORT/metrics, comma-separated)
    /// read before and after the window: queue time, compute time and mean
    /// batch go in the report beside its own latencies.
    #[arg(long, global = true, value_delimiter = ',')]
    server_metrics: Vec<String>,
    /// Each request's deadline in ms (grpc-timeout over gRPC), counted
    /// from its intended send time; the report adds goodput (OK within it).
    #[arg(long, global = true)]
    deadline_ms: Option<f64>,
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
    /// Re-measurements of a failed window before the rate counts as failed
    /// (a lone hiccup of a shared machine should not decide capacity).
    #[arg(long, default_value_t = 1)]
    confirm_failures: usize,
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
        /// Also write the autoscaling targets the plan implies, as a kustomize
        /// Component for deploy/k8s (KEDA prometheus triggers: the per-replica
        /// rate less headroom, the plan's replicas as the maximum).
        #[arg(long, value_name = "DIR")]
        emit_autoscaling: Option<PathBuf>,
        /// Prometheus the emitted triggers query.
        #[arg(long, default_value = "http://prometheus.monitoring:9090")]
        prometheus_url: String,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// The real-time load alone, then again while a batch job (submitted
    /// through the Jobs API) runs; both phases reported side by side.
    Mixed(MixedArgs),
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

#[derive(Debug, Args)]
struct MixedArgs {
    /// The job's endpoint (default: --model).
    #[arg(long)]
    job_endpoint: Option<String>,
    /// Rows for the batchers: a CSV, JSON Lines or Parquet file or folder
    /// (or a file:// URI); made absolute.
    #[arg(long)]
    job_input: String,
    /// The job's output folder (default: a fresh temporary folder, removed
    /// once the job has ended).
    #[arg(long)]
    job_output: Option<PathBuf>,
    /// Pin the job to a deployment (default: the endpoint's traffic weights).
    #[arg(long)]
    job_deployment: Option<String>,
    /// Rows per model run in the batcher; 0 = sized to memory.
    #[arg(long, default_value_t = 0)]
    job_mini_batch_size: u32,
    /// Rows per shard, the step the job's progress is counted in; 0 = the server's default.
    #[arg(long, default_value_t = 0)]
    job_shard_rows: u32,
    /// Cancel the job if it still runs after the phase (else wait for it to end).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    cancel_job: bool,
    /// How long the job may stay queued before the run gives up (and
    /// cancels it), in the same forms as --duration.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    job_start_timeout: Duration,
}

impl MixedArgs {
    fn config(&self, load: &LoadArgs) -> Result<crate::mixed::MixedConfig> {
        let input = if self.job_input.contains("://") {
            self.job_input.clone()
        } else {
            let p = std::path::absolute(&self.job_input)
                .with_context(|| format!("--job-input {}", self.job_input))?;
            if !p.exists() {
                bail!("--job-input {}: no such file or folder", p.display());
            }
            p.display().to_string()
        };
        let output = match &self.job_output {
            Some(p) => std::path::absolute(p)?,
            None => std::env::temp_dir().join(format!(
                "sb-mixed-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            )),
        };
        let job = proto::switchboard::v1::JobSpec {
            endpoint: self.job_endpoint.clone().unwrap_or(load.model.clone()),
            deployment: self.job_deployment.clone().unwrap_or_default(),
            input,
            output: output.display().to_string(),
            mini_batch_size: self.job_mini_batch_size,
            shard_rows: self.job_shard_rows,
            ..Default::default()
        };
        Ok(crate::mixed::MixedConfig {
            load: load.config(load.mode()?)?,
            job,
            cancel_job: self.cancel_job,
            remove_output: self.job_output.is_none(),
            start_timeout: self.job_start_timeout,
        })
    }
}

impl LoadArgs {
    /// `--rate` (open loop) or `--concurrency` (closed loop, default 1).
    fn mode(&self) -> Result<Mode> {
        Ok(match (self.concurrency, self.rate) {
            (_, Some(rate)) if rate > 0.0 => Mode::Open {
                rate,
                poisson: self.poisson,
            },
            (_, Some(_)) => bail!("--rate must be positive"),
            (c, None) => Mode::Closed {
                concurrency: c.unwrap_or(1),
            },
        })
    }

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
            protocol: self.protocol,
            model: self.model.clone(),
            token: self.token.clone(),
            pin: self.deployment.clone(),
            mode,
            connections,
            duration: self.duration,
            warmup: self.warmup,
            batch: self.batch,
            raw: !self.typed,
            server_pids: self.server_pids.clone(),
            server_metrics: self.server_metrics.clone(),
            progress: !self.quiet,
            rows,
            ca_cert: self.ca_cert.clone(),
            deadline: match self.deadline_ms {
                None => None,
                Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d / 1e3)),
                Some(_) => bail!("--deadline-ms must be a positive number"),
            },
            ..LoadConfig::default()
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
            write_dir(dir, r, &json)?;
        }
        Ok(json)
    }

    /// Mixed load: the pair's JSON and Markdown, and each phase's usual
    /// files in `alone/` and `with_job/`.
    fn write_mixed(&self, r: &crate::mixed::MixedReport) -> Result<String> {
        let json = serde_json::to_string_pretty(r)?;
        if let Some(p) = &self.report_json {
            std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(dir) = &self.report_dir {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("report.json"), &json)?;
            std::fs::write(dir.join("report.md"), r.markdown())?;
            for (name, phase) in [("alone", &r.alone), ("with_job", &r.with_job)] {
                write_dir(
                    &dir.join(name),
                    phase,
                    &serde_json::to_string_pretty(phase)?,
                )?;
            }
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

/// One run's report.json, report.md, HDR log and spectrum chart.
fn write_dir(dir: &std::path::Path, r: &crate::Report, json: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.md"), r.markdown())?;
    r.write_hdr_log(&dir.join("latency.hlog"))?;
    crate::chart::spectrum(r, &dir.join("latency-spectrum.svg"))
        .map_err(|e| anyhow::anyhow!("chart: {e}"))
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
        confirm_failures: s.confirm_failures,
        poisson: load.poisson,
    })
}

pub async fn run(cli: Cli) -> Result<()> {
    let a = &cli.load;
    match &cli.cmd {
        None => {
            let report = crate::run(a.config(a.mode()?)?).await?;
            println!("{}", a.write_run(&report)?);
        }
        Some(Cmd::Mixed(m)) => {
            let report = crate::mixed::mixed(m.config(a)?).await?;
            let json = a.write_mixed(&report)?;
            eprintln!("{}", report.markdown());
            println!("{json}");
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
            emit_autoscaling,
            prometheus_url,
            sweep,
        }) => {
            let result = crate::sweep(sweep_config(a, sweep)?).await?;
            let plan = crate::plan(*target_rate, *headroom, result);
            eprintln!("{}", plan.explanation);
            if let Some(dir) = emit_autoscaling {
                crate::autoscaling::write(dir, &plan, prometheus_url)?;
                eprintln!("autoscaling targets written to {}", dir.display());
            }
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

/// Durations as ghz, k6 and oha users write them: `500ms`, `10s`, `2m`,
/// `1h`, `1m30s` (also `ns`, `us`/`µs`). A bare number is seconds, `0.5`
/// too, as these flags always took.
fn parse_protocol(s: &str) -> Result<crate::config::Protocol, String> {
    match s {
        "grpc" => Ok(crate::config::Protocol::Grpc),
        "http" | "rest" => Ok(crate::config::Protocol::Http),
        other => Err(format!("'{other}' is not grpc or http")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        "expected seconds (10, 0.5) or a number with a unit: 500ms, 10s, 2m, 1h, 1m30s".to_string()
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_ns = match unit {
            // Only alone: `1m30` is a typo, not 1 min 30 s.
            "" if parts == 0 => 1e9,
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        // In whole nanoseconds, so 0.1s or 500ms come out exact.
        let ns = (value * unit_ns).round();
        if ns >= u64::MAX as f64 {
            return Err(bad());
        }
        total = total
            .checked_add(Duration::from_nanos(ns as u64))
            .ok_or_else(bad)?;
        parts += 1;
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("10", ms(10_000)),
            ("0.5", ms(500)),
            ("10s", ms(10_000)),
            ("500ms", ms(500)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1_500)),
            ("0.1s", ms(100)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            (" 3s ", ms(3_000)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_duration() {
        for text in [
            "", " ", "abc", "s", "10x", "10 s", "-1", "-1s", "1e3", "inf", "nan", "1m30", ".",
            "1.2.3s", "5sec", "1d",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("500ms, 10s, 2m"), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_duration_flags_parse_through_clap() {
        let cli = Cli::try_parse_from([
            "sb-loadtest",
            "--duration",
            "500ms",
            "--warmup",
            "0.25",
            "mixed",
            "--job-input",
            "x.csv",
            "--job-start-timeout",
            "2m",
        ])
        .unwrap();
        assert_eq!(cli.load.duration, Duration::from_millis(500));
        assert_eq!(cli.load.warmup, Duration::from_millis(250));
        let Some(Cmd::Mixed(m)) = &cli.cmd else {
            panic!("{:?}", cli.cmd)
        };
        assert_eq!(m.job_start_timeout, Duration::from_secs(120));
        // The defaults, as the help states them.
        let cli = Cli::try_parse_from(["sb-loadtest"]).unwrap();
        assert_eq!(cli.load.duration, Duration::from_secs(10));
        assert_eq!(cli.load.warmup, Duration::from_secs(2));
        let err = Cli::try_parse_from(["sb-loadtest", "--duration", "10x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid value '10x' for '--duration <DURATION>'")
                && err.contains("500ms, 10s, 2m"),
            "{err}"
        );
    }
}
