//! The `switchboard` binary's pieces, as a library so tests drive them too.

pub mod commands;
pub mod health_cmd;
mod invoke_file;
pub mod jobs_cmd;
pub mod output;
pub mod probes;
pub mod prom;
pub mod redis_server;
pub mod roles;
pub mod telemetry;
pub mod tls_flags;
pub mod up;
