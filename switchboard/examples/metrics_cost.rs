//! What recording metrics costs a request, measured on the recording calls
//! themselves (the end-to-end difference is below this machine's noise).
//! Per request, the gateway calls `gateway::telemetry::record_inference`
//! (its labels resolved by name each time) and a worker makes the handle
//! operations `gpu_worker`'s exported metrics make for a request served in
//! a batch of one (the worst case: batch operations are shared by the
//! batch): 4 counter adds, 3 histogram records, 1 gauge set. Each is timed
//! with no recorder (the `metrics` no-op, what a role without
//! --metrics-listen runs) and then with the roles' Prometheus recorder
//! (switchboard::prom's buckets), in one process.
//!
//!   cargo run --release -p switchboard --example metrics_cost [-- ITERATIONS]

use metrics::{counter, gauge, histogram};
use std::hint::black_box;
use std::time::Instant;

fn gateway_request(started: Instant) {
    gateway::telemetry::record_inference("digits", "blue", tonic::Code::Ok, started);
}

struct WorkerHandles {
    ok: metrics::Counter,
    executions: metrics::Counter,
    inferences: metrics::Counter,
    busy: metrics::Counter,
    batch_size: metrics::Histogram,
    queue: metrics::Histogram,
    compute: metrics::Histogram,
    depth: metrics::Gauge,
}

/// Resolved once, with exported.rs's names and labels.
fn worker_handles() -> WorkerHandles {
    let labels = [("endpoint", "digits"), ("deployment", "blue")];
    WorkerHandles {
        ok: counter!("switchboard_worker_requests_total", "endpoint" => "digits", "deployment" => "blue", "outcome" => "ok"),
        executions: counter!("switchboard_executions_total", &labels),
        inferences: counter!("switchboard_inferences_total", &labels),
        busy: counter!("switchboard_instance_busy_microseconds_total", "endpoint" => "digits", "deployment" => "blue", "instance" => "0"),
        batch_size: histogram!("switchboard_batch_size", &labels),
        queue: histogram!("switchboard_queue_duration_seconds", &labels),
        compute: histogram!("switchboard_compute_duration_seconds", &labels),
        depth: gauge!("switchboard_queue_depth", &labels),
    }
}

fn worker_request(h: &WorkerHandles, i: u64) {
    let t = (i % 1000) as f64 * 1e-6;
    h.depth.set((i % 16) as f64);
    h.executions.increment(1);
    h.batch_size.record(1.0);
    h.compute.record(t);
    h.busy.increment(i % 100);
    h.inferences.increment(1);
    h.queue.record(t);
    h.ok.increment(1);
}

/// Nanoseconds per call of `f`, best of 5 rounds of `n`.
fn ns_per(n: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(black_box(i));
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let measure = || {
        let h = worker_handles();
        (
            ns_per(n, |_| gateway_request(started)),
            ns_per(n, |i| worker_request(&h, i)),
        )
    };
    let (gw_off, w_off) = measure();
    let handle = switchboard::prom::builder()
        .install_recorder()
        .expect("installing the Prometheus recorder");
    let (gw_on, w_on) = measure();
    // The exporter's own work happens at scrape time, not per request, but
    // rendering proves the series were recorded.
    let text = handle.render();
    assert!(text.contains("switchboard_requests_total"), "{text}");
    println!("| part | no recorder ns/req | Prometheus recorder ns/req | cost ns/req |");
    println!("|---|---|---|---|");
    println!(
        "| gateway (record_inference) | {gw_off:.0} | {gw_on:.0} | {:.0} |",
        gw_on - gw_off
    );
    println!(
        "| worker (8 handle ops, batch of 1) | {w_off:.0} | {w_on:.0} | {:.0} |",
        w_on - w_off
    );
    println!(
        "| both: one request through gateway and worker | {:.0} | {:.0} | {:.0} |",
        gw_off + w_off,
        gw_on + w_on,
        gw_on + w_on - gw_off - w_off
    );
}
