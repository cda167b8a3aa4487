//! The GPUs a process may place models on, behind one trait: the CUDA
//! driver through cudarc on a real machine, or simulated GPUs. Everything
//! above it (which device a model goes to, `cuda:all`, the batcher's memory
//! budget and its out-of-memory halving) only asks this trait, so machines
//! without a GPU test all of it against the simulated ones.
//!
//! A simulated GPU runs its models on the CPU through the metered allocator
//! (`cpu_meter`): its free memory is its size less what that allocator
//! holds, and a batcher caps the allocator at its size, so a run that would
//! not fit on such a device fails with `OutOfMemory` as it would on the
//! real one. The simulated GPUs of one process share that one allocator; a
//! batcher uses one device, so for it the reading is exact.

use super::{EngineError, cpu_meter, format_bytes, parse_bytes};
use std::sync::OnceLock;

/// Simulated GPUs instead of the driver: sizes, comma-separated, each with
/// an optional count (`2x512MiB`, `16GiB,8GiB`).
pub const SIMULATED_GPUS_ENV: &str = "SWITCHBOARD_SIMULATED_GPUS";

/// One GPU as `switchboard devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// (major, minor); none on a simulated GPU.
    pub compute_capability: Option<(u32, u32)>,
}

pub trait Gpus: Send + Sync {
    /// How many GPUs this process can use; an error says why none can be
    /// (no driver, a build without the `cuda` feature). Cheaper than
    /// `list`, which reads each GPU (on CUDA, through a context).
    fn count(&self) -> Result<usize, EngineError>;
    /// Every GPU this process can use, by ordinal.
    fn list(&self) -> Result<Vec<GpuInfo>, EngineError>;
    /// Bytes free on one GPU now.
    fn free_memory(&self, ordinal: usize) -> Result<u64, EngineError>;
    /// Whether models "on" these GPUs really run on the CPU, metered and
    /// capped at the GPU's size.
    fn simulated(&self) -> bool {
        false
    }
    /// The bytes runs on a GPU may hold that the engine must enforce
    /// itself: a simulated GPU's size. A real GPU's driver refuses for
    /// itself.
    fn cap(&self, _ordinal: usize) -> Option<u64> {
        None
    }
}

/// The process's GPUs: simulated ones when `SWITCHBOARD_SIMULATED_GPUS` is
/// set, else the CUDA driver (builds with the `cuda` feature). Read once.
pub fn gpus() -> Result<&'static dyn Gpus, EngineError> {
    static GPUS: OnceLock<Result<Box<dyn Gpus>, EngineError>> = OnceLock::new();
    let chosen = GPUS.get_or_init(|| match std::env::var(SIMULATED_GPUS_ENV) {
        Ok(spec) => SimulatedGpus::parse(&spec)
            .map(|g| Box::new(g) as Box<dyn Gpus>)
            .map_err(|e| EngineError::InvalidArgument(format!("{SIMULATED_GPUS_ENV}: {e}"))),
        Err(_) => Ok(driver()),
    });
    match chosen {
        Ok(g) => Ok(g.as_ref()),
        Err(e) => Err(e.clone()),
    }
}

/// Fake GPUs of given sizes (see the module comment).
#[derive(Debug, Clone)]
pub struct SimulatedGpus {
    sizes: Vec<u64>,
}

impl SimulatedGpus {
    /// `2x512MiB`, `16GiB,8GiB`, or `""` for a machine with none.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut sizes = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (count, size) = match part.split_once('x') {
                Some((n, size)) => (
                    n.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("'{part}': expected COUNTxSIZE, like 2x512MiB"))?,
                    size,
                ),
                None => (1, part),
            };
            let bytes = parse_bytes(size)?;
            if bytes == 0 || count > 64 {
                return Err(format!(
                    "'{part}': expected 1 to 64 GPUs of a non-zero size"
                ));
            }
            sizes.extend(std::iter::repeat_n(bytes, count));
        }
        Ok(SimulatedGpus { sizes })
    }
}

impl Gpus for SimulatedGpus {
    fn count(&self) -> Result<usize, EngineError> {
        Ok(self.sizes.len())
    }

    fn list(&self) -> Result<Vec<GpuInfo>, EngineError> {
        (0..self.sizes.len())
            .map(|i| {
                Ok(GpuInfo {
                    ordinal: i,
                    name: format!("Simulated GPU ({})", format_bytes(self.sizes[i])),
                    total_bytes: self.sizes[i],
                    free_bytes: self.free_memory(i)?,
                    compute_capability: None,
                })
            })
            .collect()
    }

    fn free_memory(&self, ordinal: usize) -> Result<u64, EngineError> {
        let size = self
            .cap(ordinal)
            .ok_or_else(|| no_such(ordinal, self.sizes.len()))?;
        Ok(size.saturating_sub(cpu_meter()?.in_use()))
    }

    fn simulated(&self) -> bool {
        true
    }

    fn cap(&self, ordinal: usize) -> Option<u64> {
        self.sizes.get(ordinal).copied()
    }
}

pub(crate) fn no_such(ordinal: usize, count: usize) -> EngineError {
    EngineError::InvalidArgument(match count {
        0 => format!("cuda:{ordinal}: no GPU is visible"),
        1 => format!("cuda:{ordinal}: no such GPU; there is one, cuda:0"),
        n => format!(
            "cuda:{ordinal}: no such GPU; there are {n}, cuda:0 to cuda:{}",
            n - 1
        ),
    })
}

#[cfg(not(feature = "cuda"))]
fn driver() -> Box<dyn Gpus> {
    struct NoDriver;
    impl Gpus for NoDriver {
        fn count(&self) -> Result<usize, EngineError> {
            Err(EngineError::Unavailable(format!(
                "this build has no `cuda` feature (build with --features cuda), \
                 and {SIMULATED_GPUS_ENV} is not set"
            )))
        }
        fn list(&self) -> Result<Vec<GpuInfo>, EngineError> {
            self.count().map(|_| Vec::new())
        }
        fn free_memory(&self, _: usize) -> Result<u64, EngineError> {
            self.count().map(|_| 0)
        }
    }
    Box::new(NoDriver)
}

#[cfg(feature = "cuda")]
fn driver() -> Box<dyn Gpus> {
    Box::new(cuda::Driver)
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{EngineError, GpuInfo, Gpus};
    use cudarc::driver::CudaContext;

    pub struct Driver;

    /// cudarc loads libcuda on first use and panics when it cannot: ask
    /// first, so a CUDA build on a machine without the driver says so.
    fn driver_present() -> Result<(), EngineError> {
        // SAFETY: only tries to dlopen the library by its usual names.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(EngineError::Unavailable(
                "no NVIDIA driver: libcuda.so cannot be loaded (is the driver installed, \
                 and the GPU visible to this container?)"
                    .into(),
            ))
        }
    }

    fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError::Unavailable(format!("CUDA {what}: {e}"))
    }

    impl Gpus for Driver {
        /// Without a context: the driver's count.
        fn count(&self) -> Result<usize, EngineError> {
            driver_present()?;
            let n = CudaContext::device_count().map_err(|e| failed("device count", e))?;
            Ok(n.max(0) as usize)
        }

        fn list(&self) -> Result<Vec<GpuInfo>, EngineError> {
            (0..self.count()?)
                .map(|i| {
                    let ctx = CudaContext::new(i).map_err(|e| failed(&format!("device {i}"), e))?;
                    let (free, total) = ctx.mem_get_info().map_err(|e| failed("memory", e))?;
                    let (major, minor) = ctx
                        .compute_capability()
                        .map_err(|e| failed("compute capability", e))?;
                    Ok(GpuInfo {
                        ordinal: i,
                        name: ctx.name().map_err(|e| failed("device name", e))?,
                        total_bytes: total as u64,
                        free_bytes: free as u64,
                        compute_capability: Some((major as u32, minor as u32)),
                    })
                })
                .collect()
        }

        fn free_memory(&self, ordinal: usize) -> Result<u64, EngineError> {
            let n = self.count()?;
            if ordinal >= n {
                return Err(super::no_such(ordinal, n));
            }
            let ctx =
                CudaContext::new(ordinal).map_err(|e| failed(&format!("device {ordinal}"), e))?;
            let (free, _) = ctx.mem_get_info().map_err(|e| failed("memory", e))?;
            Ok(free as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_gpus_parse_counts_and_sizes() {
        let g = SimulatedGpus::parse("2x512MiB, 1GiB").unwrap();
        let list = g.list().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[1].total_bytes, 512 << 20);
        assert_eq!(list[2].name, "Simulated GPU (1.0 GiB)");
        assert!(list[0].free_bytes <= 512 << 20);
        assert!(g.simulated());
        assert!(SimulatedGpus::parse("").unwrap().list().unwrap().is_empty());
        for bad in ["twox1GiB", "2x", "0", "65x1GiB", "3 apples"] {
            assert!(SimulatedGpus::parse(bad).is_err(), "{bad}");
        }
    }

    /// Runs in CI (no driver there): a CUDA build must say why there is no
    /// GPU rather than panic in cudarc; on a GPU machine it lists them.
    #[cfg(feature = "cuda")]
    #[test]
    fn the_cuda_driver_lists_its_gpus_or_says_it_is_missing() {
        match driver().list() {
            Ok(list) => {
                for g in list {
                    assert!(g.total_bytes > 0 && g.compute_capability.is_some(), "{g:?}");
                }
            }
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("no NVIDIA driver") || e.contains("CUDA device count"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn a_missing_ordinal_names_the_ones_there_are() {
        let g = SimulatedGpus::parse("2x1GiB").unwrap();
        let e = g.free_memory(2).unwrap_err().to_string();
        assert_eq!(e, "cuda:2: no such GPU; there are 2, cuda:0 to cuda:1");
    }
}
