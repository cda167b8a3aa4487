//! Where a model runs, and how much memory it may use there. The GPUs are
//! whatever `gpus()` says: the CUDA driver in builds with the `cuda`
//! feature, or simulated GPUs (see `gpus.rs`), which is how everything here
//! is tested on machines without one.

use super::{EngineError, gpus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A GPU by ordinal: through cudarc and ONNX Runtime's CUDA execution
    /// provider, or a simulated one.
    Cuda(usize),
}

impl Device {
    /// Bytes free for models now: the kernel's MemAvailable on CPU, the
    /// driver's free device memory on a GPU.
    pub fn free_memory(&self) -> Result<u64, EngineError> {
        match self {
            Device::Cpu => cpu_available(),
            Device::Cuda(ordinal) => gpus()?.free_memory(*ordinal),
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

    /// Whether the engine runs models for this device on the CPU: the CPU
    /// itself, or a simulated GPU.
    pub fn runs_on_cpu(&self) -> Result<bool, EngineError> {
        match self {
            Device::Cpu => Ok(true),
            Device::Cuda(_) => Ok(gpus()?.simulated()),
        }
    }

    /// What the engine itself must hold allocations under on this device
    /// (a simulated GPU's size); none where the hardware enforces it.
    pub fn cap(&self) -> Result<Option<u64>, EngineError> {
        match self {
            Device::Cpu => Ok(None),
            Device::Cuda(n) => Ok(gpus()?.cap(*n)),
        }
    }

    /// Execution providers ONNX Runtime should use for this device.
    pub(crate) fn execution_providers(
        &self,
    ) -> Result<Vec<ort::ep::ExecutionProviderDispatch>, EngineError> {
        match self {
            Device::Cuda(ordinal) if !self.runs_on_cpu()? => cuda_provider(*ordinal),
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_provider(ordinal: usize) -> Result<Vec<ort::ep::ExecutionProviderDispatch>, EngineError> {
    Ok(vec![
        ort::ep::CUDA::default()
            .with_device_id(ordinal as i32)
            .build()
            .error_on_failure(),
    ])
}

#[cfg(not(feature = "cuda"))]
fn cuda_provider(ordinal: usize) -> Result<Vec<ort::ep::ExecutionProviderDispatch>, EngineError> {
    Err(EngineError::InvalidArgument(format!(
        "cuda:{ordinal}: this build has no `cuda` feature"
    )))
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

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--device` as given: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, `cuda:N,M`
/// or `cuda:all`. Which GPUs exist is known only at `resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(Vec<usize>),
    AllCuda,
}

impl DeviceSpec {
    /// The devices this names, each checked against the process's GPUs.
    pub fn resolve(&self) -> Result<Vec<Device>, EngineError> {
        match self {
            DeviceSpec::Cpu => Ok(vec![Device::Cpu]),
            _ => self.resolve_on(gpus()?),
        }
    }

    /// As `resolve`, against given GPUs.
    pub fn resolve_on(&self, gpus: &dyn super::Gpus) -> Result<Vec<Device>, EngineError> {
        let count = match self {
            DeviceSpec::Cpu => return Ok(vec![Device::Cpu]),
            _ => gpus.count()?,
        };
        let ordinals: Vec<usize> = match self {
            DeviceSpec::Cuda(list) => list.clone(),
            _ => (0..count).collect(),
        };
        if ordinals.is_empty() {
            return Err(EngineError::InvalidArgument(
                "cuda:all: no GPU is visible".into(),
            ));
        }
        for (i, &n) in ordinals.iter().enumerate() {
            if n >= count {
                return Err(super::gpus::no_such(n, count));
            }
            if ordinals[..i].contains(&n) {
                return Err(EngineError::InvalidArgument(format!(
                    "cuda:{n} is named twice"
                )));
            }
        }
        Ok(ordinals.into_iter().map(Device::Cuda).collect())
    }

    /// The one device a single-device process (a batcher) uses.
    pub fn resolve_one(&self) -> Result<Device, EngineError> {
        match self.resolve()?.as_slice() {
            [one] => Ok(*one),
            _ => Err(EngineError::InvalidArgument(format!(
                "--device {self}: a batcher uses one device; run one batcher per GPU"
            ))),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::AllCuda => f.write_str("cuda:all"),
            DeviceSpec::Cuda(list) => {
                let list: Vec<String> = list.iter().map(usize::to_string).collect();
                write!(f, "cuda:{}", list.join(","))
            }
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}': expected cpu, cuda:N, cuda:N,M or cuda:all");
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(vec![0])),
            "cuda:all" => Ok(DeviceSpec::AllCuda),
            t => {
                let list = t.strip_prefix("cuda:").ok_or_else(bad)?;
                list.split(',')
                    .map(|n| n.trim().parse::<usize>().map_err(|_| bad()))
                    .collect::<Result<Vec<_>, _>>()
                    .map(DeviceSpec::Cuda)
            }
        }
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
    fn device_specs_parse_and_print() {
        use super::DeviceSpec;
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(vec![0])),
            ("cuda:3", DeviceSpec::Cuda(vec![3])),
            ("cuda:0,2", DeviceSpec::Cuda(vec![0, 2])),
            ("cuda:all", DeviceSpec::AllCuda),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec.clone()), "{text}");
            if text != "cuda" {
                assert_eq!(spec.to_string(), text);
            }
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:0,", "tpu:0"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("expected cpu, cuda:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn specs_resolve_against_the_gpus_there_are() {
        use super::{Device, DeviceSpec};
        use crate::SimulatedGpus;
        let two = SimulatedGpus::parse("2x1GiB").unwrap();
        let none = SimulatedGpus::parse("").unwrap();
        let all = DeviceSpec::AllCuda.resolve_on(&two).unwrap();
        assert_eq!(all, vec![Device::Cuda(0), Device::Cuda(1)]);
        let one = DeviceSpec::Cuda(vec![1]).resolve_on(&two).unwrap();
        assert_eq!(one, vec![Device::Cuda(1)]);
        assert_eq!(
            DeviceSpec::Cpu.resolve_on(&none).unwrap(),
            vec![Device::Cpu]
        );
        let cases: [(DeviceSpec, &dyn crate::Gpus, &str); 4] = [
            (
                DeviceSpec::Cuda(vec![2]),
                &two,
                "cuda:2: no such GPU; there are 2",
            ),
            (DeviceSpec::Cuda(vec![1, 1]), &two, "cuda:1 is named twice"),
            (DeviceSpec::AllCuda, &none, "cuda:all: no GPU is visible"),
            (
                DeviceSpec::Cuda(vec![0]),
                &none,
                "cuda:0: no GPU is visible",
            ),
        ];
        for (spec, gpus, words) in cases {
            let e = spec.resolve_on(gpus).unwrap_err();
            assert!(
                matches!(e, crate::EngineError::InvalidArgument(_)),
                "{spec}: {e:?}"
            );
            assert!(e.to_string().contains(words), "{spec}: {e}");
        }
    }

    #[test]
    fn budget_prefers_the_configured_one() {
        let cpu = super::Device::Cpu;
        assert_eq!(cpu.memory_budget(Some(123)).unwrap(), 123);
        assert!(cpu.memory_budget(None).unwrap() > 1 << 20);
    }
}
