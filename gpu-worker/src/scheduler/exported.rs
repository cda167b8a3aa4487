//! The worker's Prometheus series for one deployment, resolved once: a
//! handle records with an atomic add, where `counter!(name, labels)` on
//! each call would build and hash its key. Names and labels are listed in
//! the README's metrics table; ModelStatistics counts the same events, so
//! the two agree (both start after the warm-up run).

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

pub(crate) struct ModelMetrics {
    pub ok: Counter,
    pub failed: Counter,
    pub queue_full: Counter,
    pub deadline: Counter,
    /// Refused at arrival: the predicted wait would miss the deadline.
    pub late: Counter,
    /// Rows scored (Triton's nv_inference_count) and model runs
    /// (nv_inference_exec_count): their ratio is the mean batch.
    pub inferences: Counter,
    pub executions: Counter,
    pub batch_size: Histogram,
    pub queue: Histogram,
    pub compute: Histogram,
    pub depth: Gauge,
    /// Adaptive batching's current delay and the batch size it waits for.
    pub delay: Gauge,
    pub target: Gauge,
    /// Microseconds each instance spent running batches: its rate / 1e6 is
    /// the instance's busy fraction. (A counter holds integers, so not
    /// seconds.)
    pub busy: Vec<Counter>,
}

impl ModelMetrics {
    /// `name` is `endpoint/deployment`, as the worker names schedulers.
    pub fn new(name: &str, instances: usize, max_queue_size: usize) -> ModelMetrics {
        let (endpoint, deployment) = name.split_once('/').unwrap_or((name, ""));
        let (e, d) = (endpoint.to_string(), deployment.to_string());
        let labels = [("endpoint", e.clone()), ("deployment", d.clone())];
        let requests = |outcome: &'static str| counter!("switchboard_worker_requests_total", "endpoint" => e.clone(), "deployment" => d.clone(), "outcome" => outcome);
        let rejected = |reason: &'static str| counter!("switchboard_rejected_total", "endpoint" => e.clone(), "deployment" => d.clone(), "reason" => reason);
        // The queue's bound, for alerts to compare the depth with; not
        // exported for an unbounded queue.
        if max_queue_size > 0 {
            gauge!("switchboard_queue_capacity", &labels).set(max_queue_size as f64);
        }
        ModelMetrics {
            ok: requests("ok"),
            failed: requests("error"),
            queue_full: rejected("queue_full"),
            deadline: rejected("deadline"),
            late: rejected("predicted_late"),
            inferences: counter!("switchboard_inferences_total", &labels),
            executions: counter!("switchboard_executions_total", &labels),
            batch_size: histogram!("switchboard_batch_size", &labels),
            queue: histogram!("switchboard_queue_duration_seconds", &labels),
            compute: histogram!("switchboard_compute_duration_seconds", &labels),
            depth: gauge!("switchboard_queue_depth", &labels),
            delay: gauge!("switchboard_batch_delay_seconds", &labels),
            target: gauge!("switchboard_batch_target_rows", &labels),
            busy: (0..instances)
                .map(|i| {
                    counter!("switchboard_instance_busy_microseconds_total", "endpoint" => e.clone(), "deployment" => d.clone(), "instance" => i.to_string())
                })
                .collect(),
        }
    }
}

/// Samples each device's free memory (what a batch may still fill: the
/// kernel's MemAvailable on CPU, the driver's free memory on a GPU) and
/// this process's resident memory, every 5 s, for as long as the worker
/// runs.
pub async fn sample_memory(devices: Vec<engine::Device>) {
    let free: Vec<_> = devices
        .iter()
        .map(|d| gauge!("switchboard_device_memory_free_bytes", "device" => d.to_string()))
        .collect();
    let resident = gauge!("switchboard_process_resident_memory_bytes");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        for (device, gauge) in devices.iter().zip(&free) {
            if let Ok(bytes) = device.free_memory() {
                gauge.set(bytes as f64);
            }
        }
        if let Some(bytes) = resident_bytes() {
            resident.set(bytes as f64);
        }
    }
}

/// Resident set size from /proc/self/statm (pages × page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
