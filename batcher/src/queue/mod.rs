//! The job queue: records and streams in Redis, shared by the gateway (which
//! submits, reads and cancels jobs) and the batchers (which do the work).

mod job;
mod scripts;
mod store;

pub use job::{
    Binding, DEFAULT_MAX_RETRIES, DEFAULT_SHARD_ROWS, JobRecord, JobSpec, JobState, now_ms,
};
pub use store::{
    DEAD_LETTER, Entry, GROUP, JOB_STREAMS, JobQueue, QueueError, SHARD_STREAMS, STREAMS, Work,
    job_stream_for, shard_stream_for,
};
