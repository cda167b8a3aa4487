//! What a run is asked to do. A leaf module: the run, its report, the
//! target and the sweeps all read it, and it reads none of them.

use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// N requests always in flight.
    Closed { concurrency: usize },
    /// Sends at `rate` per second regardless of answers; Poisson gaps or
    /// even ones.
    Open { rate: f64, poisson: bool },
}

/// How requests travel: KServe V2 over gRPC, or over REST (binary
/// tensors when raw, JSON data when typed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Grpc,
    Http,
}

impl Protocol {
    /// As reports name it: `grpc`, `http-binary` or `http-json`.
    pub fn name(self, raw: bool) -> &'static str {
        match (self, raw) {
            (Protocol::Grpc, _) => "grpc",
            (Protocol::Http, true) => "http-binary",
            (Protocol::Http, false) => "http-json",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub protocol: Protocol,
    pub model: String,
    pub token: Option<String>,
    pub pin: Option<String>,
    pub mode: Mode,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub batch: usize,
    pub raw: bool,
    /// Server processes whose CPU time is charged to the measured requests.
    pub server_pids: Vec<u32>,
    /// Roles' Prometheus endpoints read before and after the window.
    pub server_metrics: Vec<String>,
    /// A progress line on stderr every second.
    pub progress: bool,
    /// How long to wait for answers still out after the window closes.
    pub drain: Duration,
    /// Payload rows (from `--data`); random data of the model's shape if none.
    pub rows: Option<Arc<Vec<Vec<f32>>>>,
    /// CA (PEM) an `https://` target's certificate chains to; the system's
    /// roots without it.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Each request's deadline, from its (intended) send time: sent as
    /// `grpc-timeout` over gRPC, kept by the client's own timer over REST.
    pub deadline: Option<Duration>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8001".into(),
            protocol: Protocol::Grpc,
            model: "digits".into(),
            token: None,
            pin: None,
            mode: Mode::Closed { concurrency: 1 },
            connections: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            batch: 1,
            raw: true,
            server_pids: Vec::new(),
            server_metrics: Vec::new(),
            progress: false,
            drain: Duration::from_secs(30),
            rows: None,
            ca_cert: None,
            deadline: None,
        }
    }
}
