//! TorchScript backend through tch (libtorch), behind the `torch` feature.
//!
//! A TorchScript file records no input types or shapes, so, as Triton's
//! PyTorch backend asks for them in `config.pbtxt`, a sidecar
//! `<model>.pt.json` declares them:
//!
//! ```json
//! {"inputs":  [{"datatype": "FP32", "dims": [-1, 3, 32, 32]}],
//!  "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]}]}
//! ```
//!
//! Names default to Triton's `INPUT__0`, `OUTPUT__0`, …: inputs are passed
//! to `forward` in that order, and outputs are `forward`'s tensor, or its
//! tuple or list of tensors, in order.

use super::{Backend, BackendFactory, DataType, Device, EngineError, ModelSignature, OrtOptions};
use super::{Tensor, TensorSpec};
use bytes::Bytes;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{CModule, IValue, Kind};

pub struct TorchFactory {
    path: PathBuf,
    placed: Device,
    device: tch::Device,
    signature: ModelSignature,
}

impl TorchFactory {
    /// Reads the sidecar and loads the module once, so that a file libtorch
    /// cannot read fails here rather than in an instance thread.
    pub fn new(path: impl Into<PathBuf>, options: &OrtOptions) -> Result<Self, EngineError> {
        let path = path.into();
        let signature = read_sidecar(&path)?;
        // libtorch's intra-op pool is process-wide; as with ONNX Runtime,
        // the scheduler's parallelism comes from instances and batching.
        tch::set_num_threads(options.intra_threads.max(1) as i32);
        // A simulated GPU's models run on the CPU.
        let device = match options.device {
            Device::Cuda(n) if !options.device.runs_on_cpu()? => tch::Device::Cuda(n),
            _ => tch::Device::Cpu,
        };
        let factory = TorchFactory {
            path,
            placed: options.device,
            device,
            signature,
        };
        factory.load()?;
        Ok(factory)
    }

    fn load(&self) -> Result<CModule, EngineError> {
        let mut module = CModule::load_on_device(&self.path, self.device).map_err(|e| {
            EngineError::Runtime(format!("loading {}: {}", self.path.display(), brief(&e)))
        })?;
        module.set_eval();
        Ok(module)
    }
}

impl BackendFactory for TorchFactory {
    fn create(&self) -> Result<Box<dyn Backend>, EngineError> {
        Ok(Box::new(TorchBackend {
            module: self.load()?,
            device: self.device,
            signature: self.signature.clone(),
        }))
    }

    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn platform(&self) -> &'static str {
        "pytorch_libtorch"
    }

    fn device(&self) -> Device {
        self.placed
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    inputs: Vec<SidecarTensor>,
    outputs: Vec<SidecarTensor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarTensor {
    name: Option<String>,
    datatype: String,
    dims: Vec<i64>,
}

/// Where the signature of a TorchScript file is declared.
pub fn sidecar_path(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_os_string();
    name.push(".json");
    PathBuf::from(name)
}

fn read_sidecar(model: &Path) -> Result<ModelSignature, EngineError> {
    let path = sidecar_path(model);
    let bad = |why: String| EngineError::InvalidArgument(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "{e} (a TorchScript model records no input types or shapes: this file declares them)"
        ))
    })?;
    let sidecar: Sidecar = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let specs = |list: Vec<SidecarTensor>, prefix: &str| -> Result<Vec<TensorSpec>, EngineError> {
        list.into_iter()
            .enumerate()
            .map(|(i, t)| {
                let name = t.name.unwrap_or_else(|| format!("{prefix}__{i}"));
                let dtype = DataType::from_v2_name(&t.datatype)
                    .filter(|d| kind_of(*d).is_some())
                    .ok_or_else(|| {
                        bad(format!(
                            "{name}: datatype {} has no libtorch type",
                            t.datatype
                        ))
                    })?;
                if t.dims.iter().any(|&d| d < -1) {
                    return Err(bad(format!(
                        "{name}: dims {:?} (-1 marks a dynamic one)",
                        t.dims
                    )));
                }
                Ok(TensorSpec {
                    name,
                    dtype,
                    dims: t.dims,
                })
            })
            .collect()
    };
    let inputs = specs(sidecar.inputs, "INPUT")?;
    let outputs = specs(sidecar.outputs, "OUTPUT")?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(bad("declares no inputs or no outputs".into()));
    }
    Ok(ModelSignature::new(inputs, outputs))
}

/// libtorch has no unsigned types wider than a byte.
fn kind_of(d: DataType) -> Option<Kind> {
    Some(match d {
        DataType::Bool => Kind::Bool,
        DataType::Uint8 => Kind::Uint8,
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int,
        DataType::Int64 => Kind::Int64,
        DataType::Fp32 => Kind::Float,
        DataType::Fp64 => Kind::Double,
        DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => return None,
    })
}

pub struct TorchBackend {
    module: CModule,
    device: tch::Device,
    signature: ModelSignature,
}

impl TorchBackend {
    fn to_torch(&self, t: &Tensor) -> Result<tch::Tensor, EngineError> {
        let kind = kind_of(t.dtype).ok_or_else(|| {
            EngineError::InvalidArgument(format!("{} has no libtorch type", t.dtype))
        })?;
        tch::Tensor::f_from_data_size(&t.runtime_bytes(), &t.shape, kind)
            .and_then(|x| x.f_to_device(self.device))
            .map_err(|e| EngineError::Internal(brief(&e)))
    }
}

fn from_torch(spec: &TensorSpec, t: &tch::Tensor) -> Result<Tensor, EngineError> {
    let internal =
        |e: tch::TchError| EngineError::Internal(format!("output {}: {}", spec.name, brief(&e)));
    let t = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(internal)?;
    let kind = t.f_kind().map_err(internal)?;
    if Some(kind) != kind_of(spec.dtype) {
        return Err(EngineError::Internal(format!(
            "output {} is {kind:?}; its sidecar declares {}",
            spec.name, spec.dtype
        )));
    }
    let shape = t.size();
    let numel = Tensor::element_count(&shape);
    let mut data = vec![0u8; numel * spec.dtype.size()];
    t.f_copy_data_u8(&mut data, numel).map_err(internal)?;
    Ok(Tensor {
        dtype: spec.dtype,
        shape,
        data: Bytes::from(data),
    })
}

/// libtorch's message without the C++ stack trace it appends (frames of
/// addresses, no use to a client and long in a log).
fn brief(e: &tch::TchError) -> String {
    let text = e.to_string();
    text.split("\nException raised from")
        .next()
        .unwrap_or(&text)
        .trim()
        .to_string()
}

/// libtorch reports a failed allocation (CUDA's caching allocator, or the
/// CPU's) as an exception whose text says so; the batcher retries those
/// with half the rows.
fn run_error(e: tch::TchError) -> EngineError {
    let text = brief(&e);
    if text.contains("out of memory") || text.contains("DefaultCPUAllocator: can't allocate") {
        EngineError::OutOfMemory(text)
    } else {
        EngineError::Internal(text)
    }
}

/// `forward`'s result as a list of tensors.
fn tensors(v: IValue) -> Result<Vec<tch::Tensor>, EngineError> {
    match v {
        IValue::Tensor(t) => Ok(vec![t]),
        IValue::TensorList(ts) => Ok(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => vs
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                _ => Err(EngineError::Internal(
                    "forward returned a tuple holding a non-tensor".into(),
                )),
            })
            .collect(),
        _ => Err(EngineError::Internal(
            "forward returned neither a tensor nor a tuple or list of tensors".into(),
        )),
    }
}

impl Backend for TorchBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        // Inference only: no autograd graph kept for the outputs.
        let _no_grad = tch::no_grad_guard();
        let feed = inputs
            .iter()
            .map(|t| self.to_torch(t).map(IValue::Tensor))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.module.forward_is(&feed).map_err(run_error)?;
        let out = tensors(out)?;
        if out.len() != self.signature.outputs.len() {
            return Err(EngineError::Internal(format!(
                "forward gave {} outputs; the sidecar declares {}",
                out.len(),
                self.signature.outputs.len()
            )));
        }
        self.signature
            .outputs
            .iter()
            .zip(&out)
            .map(|(spec, t)| from_torch(spec, t))
            .collect()
    }
}
