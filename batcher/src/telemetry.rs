//! The batcher's Prometheus series (README's metrics table): rows and
//! shards as they are counted, and, polled from Redis, jobs by state and
//! each stream's consumer-group lag, which is what KEDA scales on.

use job_queue::{JobQueue, JobState};
use metrics::{counter, gauge, histogram};
use std::time::Duration;

/// A shard this batcher counted (not one another run had counted first).
pub fn record_shard(endpoint: &str, done: u64, failed: u64, took: Duration, batch: usize) {
    let e = endpoint.to_string();
    counter!("switchboard_job_rows_total", "endpoint" => e.clone(), "outcome" => "done")
        .increment(done);
    counter!("switchboard_job_rows_total", "endpoint" => e.clone(), "outcome" => "failed")
        .increment(failed);
    histogram!("switchboard_shard_duration_seconds", "endpoint" => e.clone())
        .record(took.as_secs_f64());
    histogram!("switchboard_job_batch_size", "endpoint" => e).record(batch as f64);
}

pub fn record_halvings(endpoint: &str, n: u64) {
    counter!("switchboard_batch_halvings_total", "endpoint" => endpoint.to_string()).increment(n);
}

/// A dead-lettered shard, and its rows (counted as failed).
pub fn record_dead_letter(endpoint: &str, rows: u64) {
    let e = endpoint.to_string();
    counter!("switchboard_dead_letters_total", "endpoint" => e.clone()).increment(1);
    counter!("switchboard_job_rows_total", "endpoint" => e, "outcome" => "failed").increment(rows);
}

const STATES: [JobState; 7] = [
    JobState::Queued,
    JobState::Running,
    JobState::Succeeded,
    JobState::PartiallySucceeded,
    JobState::Failed,
    JobState::Cancelling,
    JobState::Cancelled,
];

/// Every `every`, for as long as the batcher runs: lag and pending entries
/// of each work stream, and the states of the newest 1,000 jobs. Every
/// batcher reports the same values: dashboards take `max`.
pub async fn poll(queue: JobQueue, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Ok(lags) = queue.stream_lags().await {
            for (stream, lag, pending) in lags {
                gauge!("switchboard_stream_lag", "stream" => stream).set(lag as f64);
                gauge!("switchboard_stream_pending", "stream" => stream).set(pending as f64);
            }
        }
        if let Ok(by) = queue.recent_states(1000).await {
            for s in STATES {
                let n = by.get(s.as_str()).copied().unwrap_or(0);
                gauge!("switchboard_jobs", "state" => s.as_str()).set(n as f64);
            }
        }
    }
}
