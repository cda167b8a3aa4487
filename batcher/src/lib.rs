//! The batch path: jobs queued in Redis, planned into shards, scored by the
//! engine at memory-sized mini-batches, written as atomic part files.
//!
//! The job record, the streams and the Lua scripts are the `job-queue`
//! crate (`batcher/queue`), which the gateway shares.
//!
//! - `runner`: the batcher's loop: connect, take the next entry, keep it
//!   with heartbeats, hand it to its step, stop on shutdown;
//! - `steps`: one file per step (`plan`, `shard`, `finalize`), sharing one
//!   context (`steps/ctx.rs`: the stores, the queue, the loaded models);
//! - `shard`: one shard's read, score and write, on blocking threads;
//! - `bind`: job columns to model inputs;
//! - `layout`: every name a job writes in its output folder;
//! - `io`: planning inputs, streaming rows, writing parts (arrow), and the
//!   object stores behind remote locations;
//! - `model` and `sizing`: loaded models and `mini_batch_size: auto` from
//!   measured peak memory.
//!
//! Files depend on each other in one direction only: a step never calls
//! another (the queue links them), and shared types sit in leaf modules.

mod bind;
mod config;
pub mod io;
pub mod layout;
mod model;
mod runner;
pub mod shard;
pub mod sizing;
mod steps;
mod telemetry;

pub use bind::bind;
pub use config::BatcherConfig;
pub use runner::{BatcherError, run};
