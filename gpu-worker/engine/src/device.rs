//! Where a model runs, and how much memory it may use there. Only the CPU
//! exists on the machines we test on; the CUDA variant compiles behind the
//! `cuda` feature (checked in CI) and is not exercised here.

use super::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal, through cudarc and ONNX Runtime's CUDA
    /// execution provider.
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

impl Device {
    /// Bytes free for models now: the kernel's MemAvailable on CPU, the
    /// driver's free device memory on CUDA.
    pub fn free_memory(&self) -> Result<u64, EngineError> {
        match self {
            Device::Cpu => cpu_available(),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => cuda::free_memory(*ordinal),
        }
    }

    /// Bytes a batcher may fill on this device: the operator's `configured`
    /// budget when there is one, else what is free now (`free_memory`).
    pub fn memory_budget(&self, configured: Option<u64>) -> Result<u64, EngineError> {
        match configured {
            Some(bytes) => Ok(bytes),
            None => self.free_memory(),
        }
    }

    /// Execution providers ONNX Runtime should use for this device.
    pub(crate) fn execution_providers(&self) -> Vec<ort::ep::ExecutionProviderDispatch> {
        match self {
            Device::Cpu => Vec::new(),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                vec![
                    ort::ep::CUDA::default()
                        .with_device_id(*ordinal as i32)
                        .build()
                        .error_on_failure(),
                ]
            }
        }
    }
}

fn cpu_available() -> Result<u64, EngineError> {
    let info = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| EngineError::Runtime(format!("/proc/meminfo: {e}")))?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| EngineError::Runtime("MemAvailable missing from /proc/meminfo".into()))
}

/// As `--device` takes it: `cpu`, `cuda:N`.
impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    /// `cpu`, or `cuda:N` in builds with the `cuda` feature.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            s if s.starts_with("cuda") => {
                let n = s
                    .strip_prefix("cuda")
                    .and_then(|r| r.strip_prefix(':'))
                    .unwrap_or("0");
                n.parse()
                    .map(Device::Cuda)
                    .map_err(|_| format!("'{s}': expected cuda:N"))
            }
            _ if cfg!(feature = "cuda") => Err(format!("'{s}': expected cpu or cuda:N")),
            _ => Err(format!(
                "'{s}': expected cpu (this build has no `cuda` feature)"
            )),
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::EngineError;

    pub fn free_memory(ordinal: usize) -> Result<u64, EngineError> {
        let ctx = cudarc::driver::CudaContext::new(ordinal)
            .map_err(|e| EngineError::Runtime(format!("CUDA device {ordinal}: {e}")))?;
        let (free, _total) = ctx
            .mem_get_info()
            .map_err(|e| EngineError::Runtime(format!("CUDA device {ordinal}: {e}")))?;
        Ok(free as u64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_reports_free_memory() {
        let free = super::Device::Cpu.free_memory().unwrap();
        assert!(free > 1 << 20, "{free}");
    }

    #[test]
    fn budget_prefers_the_configured_one() {
        let cpu = super::Device::Cpu;
        assert_eq!(cpu.memory_budget(Some(123)).unwrap(), 123);
        assert!(cpu.memory_budget(None).unwrap() > 1 << 20);
    }
}
