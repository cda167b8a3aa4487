//! The server's own view of a run (`--server-metrics URL`): Prometheus text
//! from the roles' /metrics before and after the window, reduced to what a
//! latency report wants beside its own figures — time in the worker's queue,
//! time computing, and the mean batch. Plain HTTP/1.0 GET: the roles serve
//! metrics without TLS, and a client crate would be heavier than this.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The counters this report reads, summed over every series and URL.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub queue_sum: f64,
    pub queue_count: f64,
    pub compute_sum: f64,
    pub compute_count: f64,
    pub inferences: f64,
    pub executions: f64,
}

/// What the server says about the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerMetrics {
    /// Mean time a request waited in a worker's queue (µs).
    pub queue_us_mean: Option<f64>,
    /// Mean time a batch took to run (µs).
    pub compute_us_mean: Option<f64>,
    /// Rows per model execution.
    pub mean_batch: Option<f64>,
    pub executions: u64,
}

/// Sums of the series the report reads in one Prometheus text.
pub fn parse(text: &str) -> Counters {
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *sums.entry(name).or_default() += v;
        }
    }
    let get = |n: &str| sums.get(n).copied().unwrap_or(0.0);
    Counters {
        queue_sum: get("switchboard_queue_duration_seconds_sum"),
        queue_count: get("switchboard_queue_duration_seconds_count"),
        compute_sum: get("switchboard_compute_duration_seconds_sum"),
        compute_count: get("switchboard_compute_duration_seconds_count"),
        inferences: get("switchboard_inferences_total"),
        executions: get("switchboard_executions_total"),
    }
}

/// The window between two readings.
pub fn between(a: Counters, b: Counters) -> ServerMetrics {
    let mean = |sum: f64, n: f64| (n > 0.0).then(|| sum / n);
    let execs = b.executions - a.executions;
    ServerMetrics {
        queue_us_mean: mean(b.queue_sum - a.queue_sum, b.queue_count - a.queue_count)
            .map(|s| s * 1e6),
        compute_us_mean: mean(
            b.compute_sum - a.compute_sum,
            b.compute_count - a.compute_count,
        )
        .map(|s| s * 1e6),
        mean_batch: mean(b.inferences - a.inferences, execs),
        executions: execs.max(0.0) as u64,
    }
}

/// Every URL read and summed; None if any does not answer.
pub async fn read_all(urls: &[String]) -> Option<Counters> {
    let mut total = Counters::default();
    for url in urls {
        let c = parse(&get(url).await?);
        total.queue_sum += c.queue_sum;
        total.queue_count += c.queue_count;
        total.compute_sum += c.compute_sum;
        total.compute_count += c.compute_count;
        total.inferences += c.inferences;
        total.executions += c.executions;
    }
    Some(total)
}

/// The body of `http://host:port/path`.
async fn get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then_some(())
        .or_else(|| head.starts_with("HTTP/1.0 200").then_some(()))?;
    Some(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_come_from_the_window_only() {
        let before = "# TYPE x counter\n\
            switchboard_queue_duration_seconds_sum{endpoint=\"d\"} 1.0\n\
            switchboard_queue_duration_seconds_count{endpoint=\"d\"} 10\n\
            switchboard_compute_duration_seconds_sum{endpoint=\"d\"} 0.5\n\
            switchboard_compute_duration_seconds_count{endpoint=\"d\"} 5\n\
            switchboard_inferences_total{endpoint=\"d\"} 10\n\
            switchboard_executions_total{endpoint=\"d\"} 5\n";
        let after = "switchboard_queue_duration_seconds_sum{endpoint=\"d\"} 1.001\n\
            switchboard_queue_duration_seconds_count{endpoint=\"d\"} 20\n\
            switchboard_compute_duration_seconds_sum{endpoint=\"d\"} 0.502\n\
            switchboard_compute_duration_seconds_count{endpoint=\"d\"} 7\n\
            switchboard_inferences_total{endpoint=\"d\"} 20\n\
            switchboard_executions_total{endpoint=\"d\"} 7\n";
        let m = between(parse(before), parse(after));
        assert!((m.queue_us_mean.unwrap() - 100.0).abs() < 1e-6, "{m:?}");
        assert!((m.compute_us_mean.unwrap() - 1000.0).abs() < 1e-6, "{m:?}");
        assert_eq!(m.mean_batch, Some(5.0));
        assert_eq!(m.executions, 2);
    }
}
