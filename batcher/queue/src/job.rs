//! A job as it lives in Redis: the spec the gateway accepted (JSON in one
//! field) and the counters batchers move. The hash is the one source of truth
//! for progress; the streams only carry work.

use crate::Format;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub input: String,
    /// Column names, or 0-based indices written as numbers.
    pub columns: Vec<String>,
}

/// What the gateway accepted, with the deployment and model already chosen:
/// batchers need no control-plane lookup, and a traffic change after submit
/// does not split one job across two models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub endpoint: String,
    pub deployment: String,
    /// The pin the caller asked for, if any (shown back as given).
    pub pinned: bool,
    pub model_uri: String,
    pub input: String,
    pub input_format: Option<Format>,
    pub bindings: Vec<Binding>,
    pub output: String,
    pub output_format: Option<Format>,
    pub summary_only: bool,
    /// 0 = auto (sized to the device's memory).
    pub mini_batch_size: u32,
    pub max_retries: u32,
    /// Failed rows allowed before the job fails; -1 = any number.
    pub error_threshold: i64,
    pub priority: i32,
    pub allow_nan: bool,
    pub shard_rows: u32,
    /// CSV: the first line is a header (true), data (false), or detected.
    #[serde(default)]
    pub csv_header: Option<bool>,
}

pub const DEFAULT_SHARD_ROWS: u32 = 100_000;
pub const DEFAULT_MAX_RETRIES: u32 = 3;

impl JobSpec {
    /// A spec with the defaults the Jobs API applies: `auto` mini-batches,
    /// default retries and shard size, any number of failed rows.
    pub fn new(
        endpoint: &str,
        deployment: &str,
        model_uri: &str,
        input: &str,
        output: &str,
    ) -> Self {
        JobSpec {
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            pinned: false,
            model_uri: model_uri.into(),
            input: input.into(),
            input_format: None,
            bindings: vec![],
            output: output.into(),
            output_format: None,
            summary_only: false,
            mini_batch_size: 0,
            max_retries: DEFAULT_MAX_RETRIES,
            error_threshold: -1,
            priority: 0,
            allow_nan: false,
            shard_rows: DEFAULT_SHARD_ROWS,
            csv_header: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    PartiallySucceeded,
    Failed,
    Cancelling,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::PartiallySucceeded => "partially_succeeded",
            JobState::Failed => "failed",
            JobState::Cancelling => "cancelling",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "partially_succeeded" => JobState::PartiallySucceeded,
            "failed" => JobState::Failed,
            "cancelling" => JobState::Cancelling,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::PartiallySucceeded
                | JobState::Failed
                | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The job hash, decoded. Missing counters read as zero.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub cancel_requested: bool,
    pub rows_total: u64,
    pub rows_done: u64,
    pub rows_failed: u64,
    pub shards_total: u32,
    pub shards_done: u32,
    pub batch_size: u32,
    pub batch_fit: String,
    pub message: String,
    /// Why the last failed attempt at a shard failed.
    pub last_error: String,
    pub created_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub manifest: String,
    pub errors: String,
    /// The trace context it was submitted under.
    pub trace: JobTrace,
}

/// The W3C trace context (`traceparent`, `tracestate`) of the call that
/// submitted a job, kept in its record so that the batcher's spans join
/// the caller's trace; empty when there was none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobTrace {
    pub traceparent: String,
    pub tracestate: String,
}

impl JobRecord {
    pub fn from_hash(id: &str, h: &HashMap<String, String>) -> Option<JobRecord> {
        let spec: JobSpec = serde_json::from_str(h.get("spec")?).ok()?;
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let text = |k: &str| h.get(k).cloned().unwrap_or_default();
        Some(JobRecord {
            id: id.to_string(),
            spec,
            state: JobState::parse(h.get("state")?)?,
            cancel_requested: num("cancel_requested") != 0,
            rows_total: num("rows_total").max(0) as u64,
            rows_done: num("rows_done").max(0) as u64,
            rows_failed: num("rows_failed").max(0) as u64,
            shards_total: num("shards_total").max(0) as u32,
            shards_done: num("shards_done").max(0) as u32,
            batch_size: num("batch_size").max(0) as u32,
            batch_fit: text("batch_fit"),
            message: text("message"),
            last_error: text("last_error"),
            created_ms: num("created_ms"),
            started_ms: num("started_ms"),
            finished_ms: num("finished_ms"),
            manifest: text("manifest"),
            errors: text("errors"),
            trace: JobTrace {
                traceparent: text("traceparent"),
                tracestate: text("tracestate"),
            },
        })
    }

    /// Whether the error threshold is already passed (work can stop).
    pub fn over_threshold(&self) -> bool {
        self.spec.error_threshold >= 0 && self.rows_failed > self.spec.error_threshold as u64
    }

    /// The state a finished job ends in, from its counters.
    pub fn final_state(&self) -> JobState {
        if self.over_threshold() {
            JobState::Failed
        } else if self.cancel_requested {
            JobState::Cancelled
        } else if self.rows_failed > 0 {
            JobState::PartiallySucceeded
        } else {
            JobState::Succeeded
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Time-ordered and unguessable enough to be listed and not collide.
pub fn new_job_id() -> String {
    format!("job-{:012x}-{:08x}", now_ms(), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(threshold: i64, failed: u64, cancel: bool) -> JobRecord {
        let spec = JobSpec {
            error_threshold: threshold,
            shard_rows: 10,
            ..JobSpec::new("e", "d", "m.onnx", "in.csv", "out")
        };
        let mut h = HashMap::new();
        h.insert("spec".to_string(), serde_json::to_string(&spec).unwrap());
        h.insert("state".to_string(), "running".to_string());
        h.insert("rows_failed".to_string(), failed.to_string());
        h.insert("cancel_requested".to_string(), u8::from(cancel).to_string());
        JobRecord::from_hash("j", &h).unwrap()
    }

    #[test]
    fn the_trace_context_is_read_back() {
        let mut h = HashMap::new();
        let spec = JobSpec::new("e", "d", "m.onnx", "in.csv", "out");
        h.insert("spec".to_string(), serde_json::to_string(&spec).unwrap());
        h.insert("state".to_string(), "queued".to_string());
        assert_eq!(
            JobRecord::from_hash("j", &h).unwrap().trace,
            JobTrace::default()
        );
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent".to_string(), tp.to_string());
        let trace = JobRecord::from_hash("j", &h).unwrap().trace;
        assert_eq!(
            (trace.traceparent.as_str(), trace.tracestate.as_str()),
            (tp, "")
        );
    }

    #[test]
    fn final_state_follows_the_error_threshold() {
        assert_eq!(record(-1, 0, false).final_state(), JobState::Succeeded);
        assert_eq!(
            record(-1, 5, false).final_state(),
            JobState::PartiallySucceeded
        );
        assert_eq!(
            record(5, 5, false).final_state(),
            JobState::PartiallySucceeded
        );
        assert_eq!(record(5, 6, false).final_state(), JobState::Failed);
        assert_eq!(record(0, 1, false).final_state(), JobState::Failed);
        assert_eq!(record(-1, 0, true).final_state(), JobState::Cancelled);
    }

    #[test]
    fn states_round_trip() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::PartiallySucceeded,
            JobState::Failed,
            JobState::Cancelling,
            JobState::Cancelled,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
