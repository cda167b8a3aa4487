//! The batch path: jobs queued in Redis, planned into shards, scored by the
//! engine at memory-sized mini-batches, written as atomic part files.
//!
//! The job record, the streams and the Lua scripts are the `job-queue`
//! crate (`batcher/queue`), which the gateway shares.
//!
//! - `io`: planning inputs, streaming rows, writing parts (arrow);
//! - `sizing`: `mini_batch_size: auto` from measured peak memory;
//! - `runner`: the batcher's loop (plan, shard and finalize steps).

mod config;
mod finalize;
pub mod io;
mod model;
mod plan_step;
mod runner;
pub mod shard;
pub mod sizing;

pub use config::BatcherConfig;
pub use plan_step::bind;
pub use runner::{BatcherError, run};
