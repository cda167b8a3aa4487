//! The report of one run: JSON for machines, Markdown for people.

use crate::config::{LoadConfig, Mode};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Open loop only: how far behind schedule the generator itself sent.
#[derive(Debug, Clone, Serialize)]
pub struct Lateness {
    /// Sends more than 1 ms behind their intended time.
    pub over_1ms: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    /// `grpc`, `http-binary` or `http-json`.
    pub protocol: String,
    /// "closed" or "open".
    pub mode: String,
    pub concurrency: Option<usize>,
    pub target_rate_per_s: Option<f64>,
    pub poisson: bool,
    pub batch: usize,
    pub duration_s: f64,
    /// Requests started in the window and answered successfully.
    pub requests: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// How long failures took to come back, by status (a refusal's worth
    /// is in how fast it comes).
    pub error_latency_us: BTreeMap<String, Latency>,
    pub throughput_per_s: f64,
    /// With `--deadline-ms`: the deadline, and answers that came back OK
    /// within it, per second (from the intended send time in open loop).
    pub deadline_ms: Option<f64>,
    pub goodput_per_s: Option<f64>,
    /// Open loop: sends scheduled in the window, per second. With Poisson
    /// gaps it varies around the target rate by chance.
    pub offered_per_s: Option<f64>,
    pub rows_per_s: f64,
    /// From the intended send time in open loop.
    pub latency_us: Latency,
    /// The full distribution, for the percentile-spectrum chart: (percentile, µs).
    pub spectrum: Vec<(f64, u64)>,
    pub late_sends: Option<Lateness>,
    /// CPU the listed server processes spent per request (µs), from /proc.
    pub server_cpu_us_per_request: Option<f64>,
    /// CPU this load generator spent per request (µs).
    pub client_cpu_us_per_request: Option<f64>,
    /// Executions per batch size during the window, from the server's
    /// ModelStatistics (empty when it keeps none).
    pub server_batches: BTreeMap<u64, u64>,
    pub server_mean_batch: Option<f64>,
    /// From `--server-metrics`: the roles' own queue and compute times.
    pub server_metrics: Option<crate::scrape::ServerMetrics>,
    /// The latencies themselves (µs), for the HDR log.
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
}

type Pair = Option<(u64, u64)>;

impl Report {
    pub(crate) fn build(
        cfg: &LoadConfig,
        hist: &Histogram<u64>,
        errors_by_code: BTreeMap<String, u64>,
        late: &Histogram<u64>,
        server_cpu: Pair,
        client_cpu: Pair,
        (b0, b1): (BTreeMap<u64, u64>, BTreeMap<u64, u64>),
    ) -> Self {
        let secs = cfg.duration.as_secs_f64();
        let requests = hist.len();
        let errors = errors_by_code.values().sum();
        let total = requests + errors;
        let per_request = |p: Pair| {
            p.filter(|_| total > 0)
                .map(|(a, b)| b.saturating_sub(a) as f64 / total as f64)
        };
        let server_batches: BTreeMap<u64, u64> = b1
            .iter()
            .map(|(size, n)| (*size, n.saturating_sub(b0.get(size).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        let executions: u64 = server_batches.values().sum();
        let (mode, concurrency, rate, poisson) = match cfg.mode {
            Mode::Closed { concurrency } => ("closed", Some(concurrency), None, false),
            Mode::Open { rate, poisson } => ("open", None, Some(rate), poisson),
        };
        let spectrum = [
            0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
        ]
        .iter()
        .map(|&p| {
            (
                p,
                if requests == 0 {
                    0
                } else {
                    hist.value_at_percentile(p)
                },
            )
        })
        .collect();
        Report {
            model: cfg.model.clone(),
            protocol: cfg.protocol.name(cfg.raw).into(),
            mode: mode.into(),
            concurrency,
            target_rate_per_s: rate,
            poisson,
            batch: cfg.batch,
            duration_s: secs,
            requests,
            errors,
            errors_by_code,
            error_latency_us: BTreeMap::new(),
            throughput_per_s: requests as f64 / secs,
            deadline_ms: cfg.deadline.map(|d| d.as_secs_f64() * 1e3),
            goodput_per_s: cfg.deadline.map(|d| {
                let within = d.as_micros().min(u64::MAX as u128) as u64;
                hist.count_between(0, within) as f64 / secs
            }),
            offered_per_s: rate.map(|_| late.len() as f64 / secs),
            rows_per_s: (requests * cfg.batch as u64) as f64 / secs,
            latency_us: Latency::of(hist),
            spectrum,
            late_sends: rate.map(|_| Lateness {
                over_1ms: late.count_between(1_001, u64::MAX),
                p99_us: late.value_at_quantile(0.99),
                max_us: late.max(),
            }),
            server_cpu_us_per_request: per_request(server_cpu),
            client_cpu_us_per_request: per_request(client_cpu),
            server_mean_batch: (executions > 0).then(|| {
                server_batches.iter().map(|(s, n)| s * n).sum::<u64>() as f64 / executions as f64
            }),
            server_batches,
            server_metrics: None,
            histogram: Some(hist.clone()),
        }
    }

    /// The measured window as an HdrHistogram interval log (values in ms),
    /// readable by HistogramLogAnalyzer and the hdrhistogram tools.
    pub fn write_hdr_log(&self, path: &std::path::Path) -> std::io::Result<()> {
        use hdrhistogram::serialization::V2DeflateSerializer;
        use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
        let Some(h) = &self.histogram else {
            return Ok(());
        };
        let mut out = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "switchboard sb-loadtest: {} {}",
                self.model, self.mode
            ))
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut ser)?;
        log.write_histogram(
            h,
            std::time::Duration::ZERO,
            std::time::Duration::from_secs_f64(self.duration_s),
            None,
        )
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        drop(log);
        std::fs::write(path, out)
    }

    /// How the load was made, for report headings.
    pub fn load_label(&self) -> String {
        match (self.concurrency, self.target_rate_per_s) {
            (Some(c), _) => format!("closed loop, {c} in flight"),
            (_, Some(r)) => format!(
                "open loop, {r:.0}/s{}",
                if self.poisson { " (Poisson)" } else { "" }
            ),
            _ => String::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let l = &self.latency_us;
        let load = self.load_label();
        let mut s = format!(
            "## {} — {load}, batch {}, {:.0} s\n\n| throughput | requests | errors | p50 | p90 | p99 | p99.9 | p99.99 | max |\n|---|---|---|---|---|---|---|---|---|\n| {:.1}/s | {} | {} | {} µs | {} µs | {} µs | {} µs | {} µs | {} µs |\n",
            self.model,
            self.batch,
            self.duration_s,
            self.throughput_per_s,
            self.requests,
            self.errors,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.p9999,
            l.max
        );
        if let Some(late) = &self.late_sends {
            s += &format!(
                "\nSends more than 1 ms late: {} (p99 {} µs, max {} µs).\n",
                late.over_1ms, late.p99_us, late.max_us
            );
        }
        if let (Some(d), Some(g)) = (self.deadline_ms, self.goodput_per_s) {
            s += &format!("\nDeadline {d:.0} ms: goodput (OK within it) {g:.1}/s.\n");
        }
        if !self.errors_by_code.is_empty() {
            s += "\n| status | answers | p50 | p99 | max |\n|---|---|---|---|---|\n";
            for (code, n) in &self.errors_by_code {
                let l = self.error_latency_us.get(code);
                let at = |f: fn(&Latency) -> u64| l.map_or("-".into(), |l| format!("{} µs", f(l)));
                s += &format!(
                    "| {code} | {n} | {} | {} | {} |\n",
                    at(|l| l.p50),
                    at(|l| l.p99),
                    at(|l| l.max)
                );
            }
        }
        if let Some(m) = self.server_mean_batch {
            s += &format!(
                "\nServer batches (size: executions): {:?}, mean {m:.1}\n",
                self.server_batches
            );
        }
        if let Some(c) = self.server_cpu_us_per_request {
            s += &format!("\nServer CPU per request: {c:.1} µs\n");
        }
        if let Some(m) = &self.server_metrics {
            let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} µs"));
            s += &format!(
                "\nServer metrics: queue {} mean, compute {} mean a batch, mean batch {}\n",
                us(m.queue_us_mean),
                us(m.compute_us_mean),
                m.mean_batch.map_or("-".to_string(), |b| format!("{b:.1}"))
            );
        }
        s
    }
}
