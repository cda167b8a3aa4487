//! Where a model runs. Only the CPU exists on the machines we test on; the
//! CUDA variant compiles behind the `cuda` feature and is not exercised here.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(usize),
}
