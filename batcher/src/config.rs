use engine::Device;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    pub redis_url: String,
    /// Consumer name in the group; unique per process.
    pub id: String,
    pub device: Device,
    /// Memory a mini-batch may use, in bytes; None = what the device has free.
    pub memory_budget: Option<u64>,
    /// Share of the budget `auto` aims at, leaving room for the estimate's error.
    pub utilisation: f64,
    /// A hard cap on the engine's allocations, below what sizing measured:
    /// simulates a device with less memory than reported, so that the
    /// halve-and-retry path can be exercised on CPU.
    pub memory_limit: Option<u64>,
    /// The largest batch `auto` may choose: beyond it a CPU gains nothing.
    pub max_auto_batch: usize,
    /// An entry held this long without a heartbeat is taken from its batcher.
    pub visibility_timeout: Duration,
    /// Threads ONNX Runtime may use inside one operator.
    pub intra_threads: usize,
    /// Where remote inputs are staged and remote outputs written before
    /// their upload. None: a folder of this process's own under the OS
    /// temp dir, removed when the batcher stops.
    pub cache_dir: Option<PathBuf>,
    /// On shutdown, how long the step in progress may take to finish or
    /// hand its shard back.
    pub drain_timeout: Duration,
    /// True from the moment the batcher can take work (Redis reached, its
    /// consumer groups made) until it starts to drain: its readiness.
    pub ready: Arc<AtomicBool>,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            id: format!(
                "batcher-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() >> 8
            ),
            device: Device::Cpu,
            memory_budget: None,
            utilisation: 0.9,
            memory_limit: None,
            max_auto_batch: 16_384,
            visibility_timeout: Duration::from_secs(30),
            intra_threads: 1,
            cache_dir: None,
            drain_timeout: Duration::from_secs(30),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl BatcherConfig {
    /// The cap the engine holds its allocations under while scoring: the
    /// configured limit, and on a simulated GPU no more than its size (a
    /// real GPU's driver refuses for itself).
    pub fn allocation_limit(&self) -> Result<Option<u64>, engine::EngineError> {
        Ok(match (self.memory_limit, self.device.cap()?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}
