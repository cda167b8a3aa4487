//! Switchboard worker: the model engine, the micro-batch scheduler that
//! drives it, and the gRPC server that exposes it.

pub mod engine;
pub mod fixtures;
pub mod scheduler;
pub mod server;
