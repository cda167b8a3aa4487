//! Switchboard worker: the micro-batch scheduler that drives the engine, and
//! the gRPC server that exposes it.

pub mod scheduler;
pub mod server;
