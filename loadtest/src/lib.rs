//! Load against any KServe V2 server over gRPC or REST (ours, Triton, MLServer), for
//! capacity planning: closed loop (N in flight) or open loop (a constant or
//! Poisson arrival rate, latency measured from each request's *intended*
//! send time so a stalled server shows in the percentiles), HDR histograms,
//! rate sweeps against a p99 SLO, and replica plans.

pub mod autoscaling;
pub mod chart;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod data;
pub mod mixed;
pub mod report;
pub mod rest;
pub mod run;
pub mod scrape;
pub mod sweep;
pub mod target;
pub mod testserver;

pub use config::{LoadConfig, Mode, Protocol};
pub use mixed::{MixedConfig, MixedReport, mixed};
pub use report::{Latency, Report};
pub use run::run;
pub use sweep::{Plan, SweepConfig, SweepResult, plan, sweep};
