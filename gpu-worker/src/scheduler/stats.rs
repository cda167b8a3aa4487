//! Per-model counters in the shape of Triton's ModelStatistics, so that
//! perf_analyzer and our load tool read batch sizes and queue times from them.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration64 {
    pub count: u64,
    pub ns: u64,
}

impl Duration64 {
    fn add(&mut self, d: Duration, times: u64) {
        self.count += times;
        self.ns += d.as_nanos() as u64 * times;
    }
}

#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
}

#[derive(Debug, Clone, Default)]
pub struct ModelStats {
    /// Rows inferred successfully.
    pub inference_count: u64,
    /// Model executions (batches).
    pub execution_count: u64,
    pub last_inference_ms: u64,
    pub success: Duration64,
    pub fail: Duration64,
    pub queue: Duration64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
    /// Keyed by batch size in rows.
    pub batches: BTreeMap<usize, BatchStats>,
}

/// One executed batch, as the instance thread measured it.
pub struct BatchRecord {
    pub rows: usize,
    pub requests: u64,
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
    pub ok: bool,
}

impl ModelStats {
    pub fn record_batch(&mut self, b: &BatchRecord) {
        self.execution_count += 1;
        self.last_inference_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if b.ok {
            self.inference_count += b.rows as u64;
        }
        self.compute_input.add(b.input, b.requests);
        self.compute_infer.add(b.infer, b.requests);
        self.compute_output.add(b.output, b.requests);
        let e = self.batches.entry(b.rows).or_default();
        e.compute_input.add(b.input, 1);
        e.compute_infer.add(b.infer, 1);
        e.compute_output.add(b.output, 1);
    }

    pub fn record_request(&mut self, ok: bool, total: Duration, queue: Option<Duration>) {
        if ok {
            self.success.add(total, 1)
        } else {
            self.fail.add(total, 1)
        }
        if let Some(q) = queue {
            self.queue.add(q, 1);
        }
    }
}
