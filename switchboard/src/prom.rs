//! The Prometheus exporter every role installs: one bucket layout for all
//! `_seconds` histograms (50 µs to 10 s, so a 100 µs hop and a 5 s shard
//! both resolve), one for batch sizes, and a HELP line for every series the
//! roles export (README's metrics table says the same, with labels).

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

const SECONDS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 7.5, 10.0,
];
const SIZES: [f64; 14] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &SIZES))
        .expect("bucket lists are not empty")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}
use Kind::*;

/// Every series a role exports, with its HELP text: the one list that
/// `describe` registers and that the dashboard and alerts are checked
/// against (switchboard/tests/metrics.rs).
pub const CATALOG: &[(Kind, &str, &str)] = &[
    // Gateway.
    (
        Counter,
        "switchboard_requests_total",
        "Inference requests answered by the gateway, by endpoint, deployment that answered (empty: none chosen) and gRPC status code",
    ),
    (
        Histogram,
        "switchboard_request_duration_seconds",
        "Gateway time from a request's arrival to its answer",
    ),
    (
        Counter,
        "switchboard_retries_total",
        "Attempts that failed before reaching a model (transport error or UNAVAILABLE); each is retried once on another replica",
    ),
    (
        Counter,
        "switchboard_ejections_total",
        "Replicas ejected after consecutive transport failures",
    ),
    (
        Counter,
        "switchboard_unauthenticated_total",
        "Calls refused by authentication before any service saw them",
    ),
    (
        Counter,
        "switchboard_rate_limited_total",
        "Requests refused with RESOURCE_EXHAUSTED by the per-credential rate limit",
    ),
    (
        Gauge,
        "switchboard_replicas",
        "Registered replicas per deployment, as this gateway sees them",
    ),
    (
        Gauge,
        "switchboard_replicas_healthy",
        "Replicas per deployment this gateway routes to (not ejected)",
    ),
    (
        Counter,
        "switchboard_mirror_total",
        "Mirrored requests by outcome: same or differs (the shadow's outputs against the primary's), error, ok (nothing to compare)",
    ),
    // Worker.
    (
        Counter,
        "switchboard_worker_requests_total",
        "Requests a worker's scheduler answered, by outcome",
    ),
    (
        Counter,
        "switchboard_rejected_total",
        "Requests a worker refused: queue_full or deadline",
    ),
    (
        Counter,
        "switchboard_inferences_total",
        "Rows scored (Triton's nv_inference_count); divided by executions, the mean batch",
    ),
    (
        Counter,
        "switchboard_executions_total",
        "Model executions (Triton's nv_inference_exec_count)",
    ),
    (
        Histogram,
        "switchboard_batch_size",
        "Rows per model execution",
    ),
    (
        Histogram,
        "switchboard_queue_duration_seconds",
        "Time a request waited in the worker's queue",
    ),
    (
        Histogram,
        "switchboard_compute_duration_seconds",
        "Time one batch took: gather inputs, run the model, split outputs",
    ),
    (
        Gauge,
        "switchboard_queue_depth",
        "Requests waiting in a worker's queue",
    ),
    (
        Gauge,
        "switchboard_batch_delay_seconds",
        "How long the oldest request may wait for a fuller batch now (--max-queue-delay-us, or what auto chose)",
    ),
    (
        Gauge,
        "switchboard_batch_target_rows",
        "Rows at which a batch goes at once (auto's choice; the largest batch otherwise)",
    ),
    (
        Gauge,
        "switchboard_queue_capacity",
        "A worker queue's bound (--max-queue-size); absent when unbounded",
    ),
    (
        Counter,
        "switchboard_instance_busy_microseconds_total",
        "Microseconds an instance spent running batches; rate / 1e6 is its busy fraction",
    ),
    (
        Gauge,
        "switchboard_device_memory_free_bytes",
        "Memory free for models on the device (MemAvailable on CPU, the driver's free memory on CUDA)",
    ),
    (
        Gauge,
        "switchboard_process_resident_memory_bytes",
        "Resident memory of the worker process",
    ),
    // Batcher.
    (
        Counter,
        "switchboard_job_rows_total",
        "Job rows counted, by outcome (done, failed)",
    ),
    (
        Histogram,
        "switchboard_shard_duration_seconds",
        "Time to score, write and count one shard",
    ),
    (
        Histogram,
        "switchboard_job_batch_size",
        "Mini-batch size a shard ran with (after any halving)",
    ),
    (
        Counter,
        "switchboard_batch_halvings_total",
        "Mini-batch halvings after allocation failures",
    ),
    (
        Counter,
        "switchboard_dead_letters_total",
        "Shards dead-lettered after max_retries",
    ),
    (
        Gauge,
        "switchboard_jobs",
        "Jobs by state among the newest 1,000",
    ),
    (
        Gauge,
        "switchboard_stream_lag",
        "Entries of a work stream not yet delivered to any batcher (consumer-group lag: what KEDA scales on)",
    ),
    (
        Gauge,
        "switchboard_stream_pending",
        "Entries of a work stream delivered and not yet acknowledged",
    ),
];

/// HELP text for every series, once the recorder is installed.
pub fn describe() {
    for &(kind, name, help) in CATALOG {
        match kind {
            Counter => describe_counter!(name, help),
            Gauge => describe_gauge!(name, help),
            Histogram => describe_histogram!(name, help),
        }
    }
}
