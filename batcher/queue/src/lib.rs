//! The job queue: records and streams in Redis, shared by the gateway (which
//! submits, reads and cancels jobs) and the batchers (which do the work).
//! It also owns what both sides must agree on about a spec: the file
//! formats and the location schemes a batcher of this build can open.

mod check;
mod format;
mod job;
mod location;
mod scripts;
mod store;

pub use check::SpecError;
pub use format::{Format, UnknownFormat};
pub use job::{
    Binding, DEFAULT_MAX_RETRIES, DEFAULT_SHARD_ROWS, JobRecord, JobSpec, JobState, JobTrace,
    now_ms,
};
pub use location::{REMOTE_SCHEMES, scheme_supported};
pub use store::{
    DEAD_LETTER, Entry, GROUP, JOB_STREAMS, JobQueue, QueueError, SHARD_STREAMS, STREAMS, Work,
    job_stream_for, shard_stream_for,
};
