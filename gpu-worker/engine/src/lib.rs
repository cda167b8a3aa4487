//! The model engine: tensors, backends and devices. It knows nothing of gRPC,
//! Redis or protobuf, so the worker server and the batcher drive it alike.

mod backend;
mod device;
mod error;
#[cfg(feature = "test-util")]
pub mod fixtures;
mod gpus;
mod memory;
mod open;
mod ort_backend;
mod size;
mod tensor;
#[cfg(feature = "torch")]
mod torch_backend;
#[cfg(all(feature = "test-util", feature = "torch"))]
#[path = "fixtures_torch.rs"]
pub mod torch_fixtures;

pub use backend::{Backend, BackendFactory};
pub use device::{Device, DeviceSpec};
pub use error::EngineError;
pub use gpus::{GpuInfo, Gpus, SIMULATED_GPUS_ENV, SimulatedGpus, gpus};
pub use memory::{MemoryMeter, cpu_meter};
pub use open::open_model;
pub use ort_backend::{OrtBackend, OrtFactory, OrtOptions, ort_environment};
pub use size::{format_bytes, parse_bytes};
pub use tensor::{DataType, ModelSignature, Tensor, TensorSpec};
#[cfg(feature = "torch")]
pub use torch_backend::{TorchFactory, sidecar_path};
