//! The steps a work-stream entry stands for, one file each. They share one
//! [`Ctx`] and never call each other: each step ends by recording its effect
//! on the queue, which queues the next step (shards after a plan, the final
//! step after the last shard) for whichever batcher takes it.

mod ctx;
mod finalize;
mod plan;
mod shard;

pub(crate) use ctx::{Ctx, persist};
pub(crate) use finalize::finalize;
pub(crate) use plan::plan;
pub(crate) use shard::shard;
