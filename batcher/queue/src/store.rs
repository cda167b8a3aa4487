//! The job queue in Redis. Keys:
//! - `sb:job:{id}` (hash): the spec and the counters (see `job.rs`);
//! - `sb:job:{id}:done` (set): shard indices already counted;
//! - `sb:jobs` (sorted set by creation time): for listing;
//! - `sb:queue:{high,normal,low}` (streams, group `batchers`): submitted
//!   jobs waiting to be planned, by job priority;
//! - `sb:shards:{high,normal,low}` (streams, group `batchers`): the shards of
//!   planned jobs, and each job's final step;
//! - `sb:deadletter` (stream): shards that failed more than `max_retries`.
//!
//! Delivery is at least once: an entry stays pending until the step it
//! stands for has written its effects, and a dead batcher's entries are
//! claimed by another after the visibility timeout.

use super::job::{JobRecord, JobSpec, JobState, JobTrace, new_job_id, now_ms};
use super::scripts;
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use redis_conn::Connection;
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;

pub const GROUP: &str = "batchers";
/// How long a submit waits for a replica to confirm the job. Under the
/// connection's 2 s response timeout, and WAIT holds the shared connection
/// for as long as it waits, so short.
const REPLICA_WAIT_MS: u64 = 1000;
pub const DEAD_LETTER: &str = "sb:deadletter";
const INDEX: &str = "sb:jobs";
/// Submitted jobs, highest priority first.
pub const JOB_STREAMS: [&str; 3] = ["sb:queue:high", "sb:queue:normal", "sb:queue:low"];
/// Shards and final steps of planned jobs, highest priority first.
pub const SHARD_STREAMS: [&str; 3] = ["sb:shards:high", "sb:shards:normal", "sb:shards:low"];
/// Every work stream in the order a batcher looks: by priority, and within
/// one priority the shards of running jobs before planning a new one, so
/// that started jobs finish first and their partial outputs do not pile up.
pub const STREAMS: [&str; 6] = [
    SHARD_STREAMS[0],
    JOB_STREAMS[0],
    SHARD_STREAMS[1],
    JOB_STREAMS[1],
    SHARD_STREAMS[2],
    JOB_STREAMS[2],
];

fn job_key(id: &str) -> String {
    format!("sb:job:{id}")
}
fn done_key(id: &str) -> String {
    format!("sb:job:{id}:done")
}

/// Three levels are enough to let urgent jobs pass bulk ones; finer
/// priorities would need streams each.
fn level(priority: i32) -> usize {
    match priority {
        p if p > 0 => 0,
        0 => 1,
        _ => 2,
    }
}

pub fn job_stream_for(priority: i32) -> &'static str {
    JOB_STREAMS[level(priority)]
}

pub fn shard_stream_for(priority: i32) -> &'static str {
    SHARD_STREAMS[level(priority)]
}

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("job '{0}' not found")]
    NotFound(String),
    #[error("job '{0}' has a record this version cannot read")]
    Corrupt(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "job '{0}' is recorded but no Redis replica confirmed it within 1 s, so a failover could lose it; see `job status {0}` before submitting again"
    )]
    NotReplicated(String),
    #[error("output '{output}' is being written by job '{job}'; give another folder")]
    OutputInUse { output: String, job: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Plan,
    Shard { index: u32, piece: String },
    Finalize,
}

/// One delivered stream entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: String,
    pub id: String,
    pub job: String,
    pub work: Work,
}

impl Entry {
    fn parse(stream: &str, e: &StreamId) -> Option<Entry> {
        let kind: String = e.get("kind")?;
        let job: String = e.get("job")?;
        let work = match kind.as_str() {
            "plan" => Work::Plan,
            "finalize" => Work::Finalize,
            "shard" => Work::Shard {
                index: e.get::<String>("shard")?.parse().ok()?,
                piece: e.get("piece")?,
            },
            _ => return None,
        };
        Some(Entry {
            stream: stream.to_string(),
            id: e.id.clone(),
            job,
            work,
        })
    }
}

#[derive(Clone)]
pub struct JobQueue {
    conn: Connection,
}

impl JobQueue {
    pub fn new(conn: Connection) -> Self {
        JobQueue { conn }
    }

    /// A job id answered to a client must outlive a failover, and Redis
    /// replicates asynchronously: when the primary has replicas, wait until
    /// one holds the job (`WAIT 1`). A primary without replicas has nothing
    /// to wait for (its AOF is the only copy there is).
    async fn wait_for_replica(&self, c: &mut Connection, id: &str) -> Result<(), QueueError> {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(c).await?;
        let replicas = match role.get(2) {
            Some(redis::Value::Array(r)) => r.len(),
            _ => 0,
        };
        if replicas == 0 {
            return Ok(());
        }
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(REPLICA_WAIT_MS)
            .query_async(c)
            .await?;
        if acked < 1 {
            return Err(QueueError::NotReplicated(id.to_string()));
        }
        Ok(())
    }

    pub async fn submit(&self, spec: JobSpec) -> Result<JobRecord, QueueError> {
        self.submit_traced(spec, &JobTrace::default()).await
    }

    /// `submit`, keeping the caller's trace context with the job.
    pub async fn submit_traced(
        &self,
        spec: JobSpec,
        trace: &JobTrace,
    ) -> Result<JobRecord, QueueError> {
        let id = new_job_id();
        let now = now_ms();
        let spec_json =
            serde_json::to_string(&spec).map_err(|_| QueueError::Corrupt(id.clone()))?;
        let mut c = self.conn.clone();
        let output = spec.output.trim_end_matches('/');
        let holder: String = scripts::CLAIM_OUTPUT
            .key(format!("sb:output:{output}"))
            .arg(&id)
            .invoke_async(&mut c)
            .await?;
        if !holder.is_empty() {
            return Err(QueueError::OutputInUse {
                output: spec.output.clone(),
                job: holder,
            });
        }
        let created = now.to_string();
        let mut fields = vec![
            ("spec", spec_json.as_str()),
            ("state", JobState::Queued.as_str()),
            ("created_ms", created.as_str()),
        ];
        for (k, v) in [
            ("traceparent", &trace.traceparent),
            ("tracestate", &trace.tracestate),
        ] {
            if !v.is_empty() {
                fields.push((k, v.as_str()));
            }
        }
        // One transaction: a job is either recorded, listed and queued, or not at all.
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(job_key(&id), &fields)
            .ignore()
            .zadd(INDEX, &id, now)
            .ignore()
            .xadd(
                job_stream_for(spec.priority),
                "*",
                &[("kind", "plan"), ("job", id.as_str())],
            )
            .ignore()
            .query_async(&mut c)
            .await?;
        self.wait_for_replica(&mut c, &id).await?;
        self.get(&id).await
    }

    pub async fn get(&self, id: &str) -> Result<JobRecord, QueueError> {
        // Ids never hold ':'; one that does would name a job's companion
        // key (its done set), which is not a job.
        if id.is_empty() || id.contains(':') {
            return Err(QueueError::NotFound(id.to_string()));
        }
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(job_key(id)).await?;
        if h.is_empty() {
            return Err(QueueError::NotFound(id.to_string()));
        }
        JobRecord::from_hash(id, &h).ok_or_else(|| QueueError::Corrupt(id.to_string()))
    }

    /// Newest first, from `offset`; answers the page and the next offset.
    pub async fn list(
        &self,
        endpoint: Option<&str>,
        state: Option<JobState>,
        page_size: usize,
        offset: usize,
    ) -> Result<(Vec<JobRecord>, Option<usize>), QueueError> {
        let mut c = self.conn.clone();
        let mut jobs = Vec::new();
        let mut at = offset;
        // Filters are applied here, so read the index a window at a time
        // until the page is full or the index ends.
        const WINDOW: usize = 200;
        loop {
            let ids: Vec<String> = c
                .zrevrange(INDEX, at as isize, (at + WINDOW - 1) as isize)
                .await?;
            if ids.is_empty() {
                return Ok((jobs, None));
            }
            for id in &ids {
                at += 1;
                let Ok(job) = self.get(id).await else {
                    continue;
                };
                let keep = endpoint.is_none_or(|e| job.spec.endpoint == e)
                    && state.is_none_or(|s| job.state == s);
                if keep {
                    jobs.push(job);
                    if jobs.len() == page_size {
                        return Ok((jobs, Some(at)));
                    }
                }
            }
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<JobRecord, QueueError> {
        let mut c = self.conn.clone();
        let r: Option<String> = scripts::CANCEL
            .key(job_key(id))
            .arg(now_ms())
            .invoke_async(&mut c)
            .await?;
        if r.is_none() {
            return Err(QueueError::NotFound(id.to_string()));
        }
        self.get(id).await
    }

    /// Creates the consumer group on each stream (from the start, so that
    /// jobs submitted before any batcher ran are seen).
    pub async fn ensure_groups(&self) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        for s in STREAMS {
            let r: redis::RedisResult<()> = c.xgroup_create_mkstream(s, GROUP, "0").await;
            if let Err(e) = r
                && e.code() != Some("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The next new entry, highest priority first; waits up to `block` when
    /// all streams are empty.
    pub async fn next(&self, consumer: &str, block: Duration) -> Result<Option<Entry>, QueueError> {
        let mut c = self.conn.clone();
        for s in STREAMS {
            let opts = StreamReadOptions::default().group(GROUP, consumer).count(1);
            let r: StreamReadReply = c.xread_options(&[s], &[">"], &opts).await?;
            if let Some(e) = first(r) {
                return Ok(Some(e));
            }
        }
        let opts = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(1)
            .block(block.as_millis() as usize);
        let r: StreamReadReply = c
            .xread_options(&STREAMS, &[">"; STREAMS.len()], &opts)
            .await?;
        Ok(first(r))
    }

    /// Takes over one entry another consumer has held for `min_idle`
    /// without touching it: its batcher is presumed dead.
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<Option<Entry>, QueueError> {
        let mut c = self.conn.clone();
        for s in STREAMS {
            let opts = StreamAutoClaimOptions::default().count(1);
            let r: redis::streams::StreamAutoClaimReply = c
                .xautoclaim_options(s, GROUP, consumer, min_idle.as_millis() as u64, "0-0", opts)
                .await?;
            if let Some(e) = r.claimed.first().and_then(|e| Entry::parse(s, e)) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Resets an entry's idle time while its (long) step runs, so that it
    /// is not reclaimed from a live batcher.
    pub async fn touch(&self, consumer: &str, e: &Entry) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&e.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(&e.id)
            .arg("JUSTID")
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Records the plan and queues its shards, unless the job is no longer
    /// queued (planned already, or cancelled).
    pub async fn plan(
        &self,
        e: &Entry,
        job: &JobRecord,
        rows_total: u64,
        pieces: &[String],
    ) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let mut inv = scripts::PLAN.prepare_invoke();
        inv.key(job_key(&job.id))
            .key(shard_stream_for(job.spec.priority))
            .key(&e.stream)
            .arg(GROUP)
            .arg(&e.id)
            .arg(now_ms())
            .arg(rows_total)
            .arg(pieces.len())
            .arg(&job.id);
        for (i, p) in pieces.iter().enumerate() {
            inv.arg(i).arg(p);
        }
        let _: Option<String> = inv.invoke_async(&mut c).await?;
        Ok(())
    }

    /// Counts an attempt at a shard; crashes count too, since the counter
    /// moves before the work starts.
    pub async fn attempt(&self, job: &str, shard: u32) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        Ok(c.hincr(job_key(job), format!("attempts:{shard}"), 1)
            .await?)
    }

    /// Counts a shard that had to halve its batch (a fit that holds makes
    /// this 1 per model and job, however many shards follow).
    pub async fn count_halving(&self, job: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: i64 = c.hincr(job_key(job), "halved_shards", 1).await?;
        Ok(())
    }

    /// Counts a failed try at the job's final step.
    pub async fn final_attempt(&self, job: &str) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        Ok(c.hincr(job_key(job), "attempts:final", 1).await?)
    }

    /// Counts a shard (once, however often it ran) and acknowledges it;
    /// true when this call counted it (false: another run had).
    pub async fn complete(
        &self,
        e: &Entry,
        consumer: &str,
        shard: u32,
        done: u64,
        failed: u64,
    ) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let counted: i64 = scripts::COMPLETE
            .key(job_key(&e.job))
            .key(done_key(&e.job))
            .key(&e.stream)
            .arg(GROUP)
            .arg(&e.id)
            .arg(shard)
            .arg(done)
            .arg(failed)
            .arg(&e.job)
            .arg(consumer)
            .invoke_async(&mut c)
            .await?;
        Ok(counted == 1)
    }

    /// Each work stream's consumer-group lag (entries not yet delivered to
    /// any batcher: what KEDA scales on) and pending entries (delivered,
    /// not yet acknowledged).
    pub async fn stream_lags(&self) -> Result<Vec<(&'static str, u64, u64)>, QueueError> {
        let mut c = self.conn.clone();
        let mut out = Vec::new();
        for stream in STREAMS {
            let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            let Some(g) = groups
                .iter()
                .find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == GROUP.as_bytes()))
            else {
                continue;
            };
            let int = |k: &str| match g.get(k) {
                Some(redis::Value::Int(n)) => (*n).max(0) as u64,
                _ => 0,
            };
            out.push((stream, int("lag"), int("pending")));
        }
        Ok(out)
    }

    /// Jobs by state among the `recent` newest (reading every job of a long
    /// history on each poll would grow without bound).
    pub async fn recent_states(&self, recent: usize) -> Result<HashMap<String, u64>, QueueError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrevrange(INDEX, 0, recent.max(1) as isize - 1).await?;
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(job_key(id), "state");
        }
        let states: Vec<Option<String>> = pipe.query_async(&mut c).await?;
        let mut by = HashMap::new();
        for s in states.into_iter().flatten() {
            *by.entry(s).or_insert(0) += 1;
        }
        Ok(by)
    }

    /// Queues the entry again (at the back) and acknowledges this delivery,
    /// as one step that a resent call cannot repeat.
    pub async fn retry(&self, e: &Entry, reason: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let fields: Vec<(&str, String)> = match &e.work {
            Work::Plan => vec![("kind", "plan".into()), ("job", e.job.clone())],
            Work::Finalize => vec![("kind", "finalize".into()), ("job", e.job.clone())],
            Work::Shard { index, piece } => vec![
                ("kind", "shard".into()),
                ("job", e.job.clone()),
                ("shard", index.to_string()),
                ("piece", piece.clone()),
            ],
        };
        let mut inv = scripts::RETRY.prepare_invoke();
        inv.key(job_key(&e.job))
            .key(&e.stream)
            .arg(GROUP)
            .arg(&e.id)
            .arg(reason);
        for (k, v) in &fields {
            inv.arg(*k).arg(v);
        }
        let _: i64 = inv.invoke_async(&mut c).await?;
        Ok(())
    }

    pub async fn dead_letter(&self, e: &Entry, shard: u32, reason: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: String = c
            .xadd(
                DEAD_LETTER,
                "*",
                &[
                    ("job", e.job.as_str()),
                    ("shard", &shard.to_string()),
                    ("reason", reason),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn finish(
        &self,
        e: &Entry,
        state: JobState,
        message: &str,
        manifest: &str,
        errors: &str,
    ) -> Result<(), QueueError> {
        self.finish_from(e, None, state, message, manifest, errors)
            .await
    }

    /// Like [`Self::finish`], but only while the job is in state `from`: a
    /// plan entry delivered twice must not fail a job the other delivery
    /// has already started.
    pub async fn finish_from(
        &self,
        e: &Entry,
        from: Option<JobState>,
        state: JobState,
        message: &str,
        manifest: &str,
        errors: &str,
    ) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: i64 = scripts::FINISH
            .key(job_key(&e.job))
            .key(&e.stream)
            .arg(GROUP)
            .arg(&e.id)
            .arg(state.as_str())
            .arg(message)
            .arg(manifest)
            .arg(errors)
            .arg(now_ms())
            .arg(from.map_or("", JobState::as_str))
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Hands an entry this consumer holds back to the group, to be
    /// reclaimed by the next batcher at once (see `scripts::RELEASE`).
    /// Returns false when it was no longer this consumer's.
    pub async fn release(&self, e: &Entry, consumer: &str) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let shard = match &e.work {
            Work::Shard { index, .. } => index.to_string(),
            Work::Plan | Work::Finalize => String::new(),
        };
        // A year: past any visibility timeout a batcher is started with.
        const LONG_IDLE_MS: u64 = 365 * 24 * 3600 * 1000;
        let n: i64 = scripts::RELEASE
            .key(job_key(&e.job))
            .key(&e.stream)
            .arg(GROUP)
            .arg(&e.id)
            .arg(consumer)
            .arg(shard)
            .arg(LONG_IDLE_MS)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    pub async fn ack(&self, e: &Entry) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: i64 = c.xack(&e.stream, GROUP, &[&e.id]).await?;
        Ok(())
    }

    pub async fn set_batch(&self, job: &str, size: u32, fit: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c
            .hset_multiple(
                job_key(job),
                &[
                    ("batch_size", size.to_string()),
                    ("batch_fit", fit.to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// (shard, rows done, rows failed) of each counted shard, in order.
    pub async fn parts(&self, job: &str) -> Result<Vec<(u32, u64, u64)>, QueueError> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(job_key(job)).await?;
        let mut v: Vec<(u32, u64, u64)> = h
            .iter()
            .filter_map(|(k, val)| {
                let shard = k.strip_prefix("part:")?.parse().ok()?;
                let mut v = val.split(',');
                Some((shard, v.next()?.parse().ok()?, v.next()?.parse().ok()?))
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }
}

fn first(r: StreamReadReply) -> Option<Entry> {
    r.keys
        .iter()
        .find_map(|k| k.ids.first().and_then(|e| Entry::parse(&k.key, e)))
}
