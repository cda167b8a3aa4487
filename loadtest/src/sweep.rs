//! The highest rate a server sustains within a p99 SLO, by binary search over
//! open-loop runs, and the replicas a target rate needs.

use crate::config::{LoadConfig, Mode};
use crate::run::run_on;
use crate::target::Target;
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// URL, model, credentials, batch, window length and warm-up per probe.
    pub base: LoadConfig,
    pub slo_p99: Duration,
    /// Largest share of failed requests a passing rate may have.
    pub max_error_rate: f64,
    /// Search range, requests per second.
    pub lo: f64,
    pub hi: f64,
    /// Halvings of the range.
    pub iterations: usize,
    /// Windows per probed rate; every one must pass (stability).
    pub repeats: usize,
    /// Times a failed window is measured again before the rate is judged
    /// failed. On a shared machine one hiccup (a stolen core, a page-cache
    /// flush) can put a single window over the SLO at any rate; a failure
    /// that repeats is the server's. 0: the first failure decides.
    pub confirm_failures: usize,
    pub poisson: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate_per_s: f64,
    pub window: usize,
    /// 0 for a window's first measurement, k for its k-th re-measurement.
    pub attempt: usize,
    pub passed: bool,
    pub throughput_per_s: f64,
    pub p99_us: u64,
    pub error_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepResult {
    pub slo_p99_ms: f64,
    pub max_error_rate: f64,
    /// Highest rate that passed every window; 0 if even `lo` failed.
    pub capacity_per_s: f64,
    /// True when `hi` itself passed: the capacity is at least that.
    pub capacity_at_least: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target_rate_per_s: f64,
    pub slo_p99_ms: f64,
    pub capacity_per_replica_per_s: f64,
    /// Share of each replica's capacity kept free for bursts and failures.
    pub headroom: f64,
    pub replicas: u64,
    pub explanation: String,
    pub sweep: SweepResult,
}

async fn probe(
    target: &Target,
    cfg: &SweepConfig,
    rate: f64,
    steps: &mut Vec<Step>,
) -> Result<bool> {
    let run_cfg = LoadConfig {
        mode: Mode::Open {
            rate,
            poisson: cfg.poisson,
        },
        progress: false,
        ..cfg.base.clone()
    };
    for window in 0..cfg.repeats.max(1) {
        let mut attempt = 0;
        loop {
            let r = run_on(target, &run_cfg).await?;
            let total = (r.requests + r.errors).max(1) as f64;
            let error_rate = r.errors as f64 / total;
            // Answers must keep up with the offered rate, not only be fast.
            let passed = r.latency_us.p99 as f64 <= cfg.slo_p99.as_micros() as f64
                && error_rate <= cfg.max_error_rate
                && r.throughput_per_s >= 0.95 * rate;
            steps.push(Step {
                rate_per_s: rate,
                window,
                attempt,
                passed,
                throughput_per_s: r.throughput_per_s,
                p99_us: r.latency_us.p99,
                error_rate,
            });
            if passed {
                break;
            }
            if attempt == cfg.confirm_failures {
                return Ok(false);
            }
            attempt += 1;
        }
    }
    Ok(true)
}

pub async fn sweep(cfg: SweepConfig) -> Result<SweepResult> {
    let b = &cfg.base;
    let target = Target::connect(b).await?;
    let mut steps = Vec::new();
    let (mut lo, mut hi) = (cfg.lo, cfg.hi);
    let result = |capacity: f64, at_least: bool, steps: Vec<Step>| SweepResult {
        slo_p99_ms: cfg.slo_p99.as_secs_f64() * 1e3,
        max_error_rate: cfg.max_error_rate,
        capacity_per_s: capacity,
        capacity_at_least: at_least,
        steps,
    };
    if !probe(&target, &cfg, lo, &mut steps).await? {
        return Ok(result(0.0, false, steps));
    }
    if probe(&target, &cfg, hi, &mut steps).await? {
        return Ok(result(hi, true, steps));
    }
    for _ in 0..cfg.iterations {
        let mid = (lo + hi) / 2.0;
        if probe(&target, &cfg, mid, &mut steps).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(result(lo, false, steps))
}

/// Replicas for `target_rate` when one sustains `sweep.capacity_per_s`
/// within the SLO, each run at most at `1 - headroom` of it.
pub fn plan(target_rate: f64, headroom: f64, sweep: SweepResult) -> Plan {
    let usable = sweep.capacity_per_s * (1.0 - headroom.clamp(0.0, 0.95));
    let replicas = if usable > 0.0 {
        (target_rate / usable).ceil().max(1.0) as u64
    } else {
        0
    };
    let explanation = if usable > 0.0 {
        format!(
            "one replica sustains {:.0}/s with p99 <= {:.1} ms{}; keeping {:.0} % headroom leaves {usable:.0}/s each, so {target_rate:.0}/s needs {replicas}",
            sweep.capacity_per_s,
            sweep.slo_p99_ms,
            if sweep.capacity_at_least {
                " (or more: the search's upper bound passed)"
            } else {
                ""
            },
            headroom * 100.0
        )
    } else {
        format!(
            "no probed rate met p99 <= {:.1} ms: the SLO cannot be met at any rate searched",
            sweep.slo_p99_ms
        )
    };
    Plan {
        target_rate_per_s: target_rate,
        slo_p99_ms: sweep.slo_p99_ms,
        capacity_per_replica_per_s: sweep.capacity_per_s,
        headroom,
        replicas,
        explanation,
        sweep,
    }
}
