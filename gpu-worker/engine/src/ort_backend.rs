//! ONNX Runtime backend. The library is loaded at run time (`load-dynamic`):
//! from `ORT_DYLIB_PATH`, else from the project-local folder that
//! `scripts/setup.sh` fills from the `onnxruntime` wheel (in `cuda` builds,
//! first the one `setup.sh --cuda` fills from `onnxruntime-gpu`).

use super::memory::WatchedRun;
use super::{Backend, BackendFactory, DataType, EngineError, ModelSignature, Tensor, TensorSpec};
use bytes::Bytes;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor as OrtTensor, TensorElementType, ValueType};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where setup installs the wheel, relative to the project root.
const LOCAL_ORT_DIR: &str = ".local/onnxruntime/onnxruntime/capi";
/// Where `setup.sh --cuda` puts the `onnxruntime-gpu` library with its CUDA
/// provider and the CUDA libraries it needs; a `cuda` build prefers it (it
/// runs CPU sessions too).
const LOCAL_ORT_DIRS: &[&str] = if cfg!(feature = "cuda") {
    &[".local/onnxruntime-gpu/lib", LOCAL_ORT_DIR]
} else {
    &[LOCAL_ORT_DIR]
};

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, EngineError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn ort_environment() -> Result<&'static ort::environment::Environment, EngineError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = find_library()?;
            ort::init_from(&path)
                .map_err(|e| EngineError::Runtime(format!("{}: {e}", path.display())))?
                .with_name("switchboard")
                .build()
                .map_err(|e| EngineError::Runtime(e.to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn find_library() -> Result<PathBuf, EngineError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(EngineError::Runtime(format!(
                "ORT_DYLIB_PATH={} is not a file",
                p.display()
            )))
        };
    }
    // Look beside the working directory, the executable, and the source tree
    // this binary was built from, so tests, `cargo run` and installed
    // binaries all find a project-local install.
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().map(Path::to_path_buf));
    }
    roots.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")));
    for dir in LOCAL_ORT_DIRS {
        for root in &roots {
            if let Some(lib) = library_in(&root.join(dir)) {
                return Ok(lib);
            }
        }
    }
    Err(EngineError::Runtime(
        "libonnxruntime not found: set ORT_DYLIB_PATH, or run scripts/setup.sh to install the \
         onnxruntime wheel into .local/onnxruntime"
            .into(),
    ))
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    libs.pop()
}

/// How a model is opened; ONNX Runtime reads all of it, TorchScript the
/// threads and the device.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// Threads one instance uses inside an operator. Default 1: the
    /// scheduler gets parallelism from instances and batching, and spinning
    /// threads would steal the cores the gRPC server needs.
    pub intra_threads: usize,
    pub device: super::Device,
    /// Route the session's CPU buffers through the metered allocator
    /// (`cpu_meter()`), so its peak can be read and a limit can fail a run
    /// with `EngineError::OutOfMemory`. Off for the real-time worker, which
    /// keeps ONNX Runtime's own arena. Only CPU memory is metered: on CUDA,
    /// device memory is read with `Device::free_memory`. A simulated GPU's
    /// memory is this allocator's.
    pub metered: bool,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            intra_threads: 1,
            device: super::Device::Cpu,
            metered: false,
        }
    }
}

pub struct OrtFactory {
    path: PathBuf,
    options: OrtOptions,
    signature: ModelSignature,
}

impl OrtFactory {
    /// Opens the model once to read its signature; instances are made later.
    pub fn new(path: impl Into<PathBuf>, options: OrtOptions) -> Result<Self, EngineError> {
        let path = path.into();
        let session = open_session(&path, &options)?;
        let signature = signature_of(&session)?;
        Ok(OrtFactory {
            path,
            options,
            signature,
        })
    }
}

impl BackendFactory for OrtFactory {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    fn metered(&self) -> bool {
        self.options.metered
    }

    fn device(&self) -> super::Device {
        self.options.device
    }

    fn create(&self) -> Result<Box<dyn Backend>, EngineError> {
        let session = open_session(&self.path, &self.options)?;
        Ok(Box::new(OrtBackend {
            session,
            signature: self.signature.clone(),
            metered: self.options.metered,
        }))
    }
}

fn open_session(path: &Path, options: &OrtOptions) -> Result<Session, EngineError> {
    let env = ort_environment()?;
    let load = |e: String| EngineError::Runtime(format!("loading {}: {e}", path.display()));
    let mut builder = Session::builder(env).map_err(|e| load(e.to_string()))?;
    if options.metered {
        // The session picks up env allocators when it is built, so the
        // allocator must be registered first.
        super::memory::cpu_meter()?;
        // Replaces the CPU provider's allocator, arena included, for this
        // session. Memory patterns are off because with them the first run
        // of a shape allocates differently from the later ones (one planned
        // block, about 16% more for digits_mlp), so a warm-up measurement
        // would not hold; without them every run of a shape peaks alike.
        builder = builder
            .with_config_entry("session.use_env_allocators", "1")
            .map_err(|e| load(e.to_string()))?
            .with_memory_pattern(false)
            .map_err(|e| load(e.to_string()))?;
    }
    builder
        .with_intra_threads(options.intra_threads)
        .map_err(|e| load(e.to_string()))?
        .with_intra_op_spinning(false)
        .map_err(|e| load(e.to_string()))?
        .with_execution_providers(options.device.execution_providers()?)
        .map_err(|e| {
            // The usual cause on a GPU machine: the CPU library is loaded.
            let hint = match options.device {
                super::Device::Cuda(_) => {
                    " (scripts/setup.sh --cuda installs ONNX Runtime's CUDA provider)"
                }
                super::Device::Cpu => "",
            };
            load(format!("{e}{hint}"))
        })?
        .commit_from_file(path)
        .map_err(|e| load(e.to_string()))
}

fn signature_of(session: &Session) -> Result<ModelSignature, EngineError> {
    let spec = |o: &ort::value::Outlet| -> Result<TensorSpec, EngineError> {
        match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: o.name().to_string(),
                dtype: from_ort(*ty).ok_or_else(|| {
                    EngineError::Runtime(format!("tensor {} has unsupported type {ty:?}", o.name()))
                })?,
                dims: shape.iter().copied().collect(),
            }),
            other => Err(EngineError::Runtime(format!(
                "{} is a {other:?}; only tensors are served (export classifiers without ZipMap)",
                o.name()
            ))),
        }
    };
    let inputs = session
        .inputs()
        .iter()
        .map(spec)
        .collect::<Result<_, _>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(spec)
        .collect::<Result<_, _>>()?;
    Ok(ModelSignature::new(inputs, outputs))
}

fn from_ort(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Bool => DataType::Bool,
        _ => return None,
    })
}

pub struct OrtBackend {
    session: Session,
    signature: ModelSignature,
    metered: bool,
}

/// Expands `$body` with `$t` bound to the Rust type of `$dtype`.
macro_rules! with_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DataType::Fp32 => {
                type $t = f32;
                $body
            }
            DataType::Fp64 => {
                type $t = f64;
                $body
            }
            DataType::Int64 => {
                type $t = i64;
                $body
            }
            DataType::Int32 => {
                type $t = i32;
                $body
            }
            DataType::Int16 => {
                type $t = i16;
                $body
            }
            DataType::Int8 => {
                type $t = i8;
                $body
            }
            DataType::Uint8 => {
                type $t = u8;
                $body
            }
            DataType::Uint16 => {
                type $t = u16;
                $body
            }
            DataType::Uint32 => {
                type $t = u32;
                $body
            }
            DataType::Uint64 => {
                type $t = u64;
                $body
            }
            DataType::Bool => {
                type $t = bool;
                $body
            }
        }
    };
}

fn to_ort(t: &Tensor) -> Result<SessionInputValue<'static>, EngineError> {
    let internal = |e: ort::Error| EngineError::Internal(e.to_string());
    let data = t.runtime_bytes();
    with_type!(t.dtype, T => {
        let mut v: Vec<T> = vec![T::default(); data.len() / std::mem::size_of::<T>()];
        copy_into(&mut v, &data);
        Ok(OrtTensor::from_array((t.shape.clone(), v)).map_err(internal)?.into())
    })
}

fn copy_into<T: Copy>(dst: &mut [T], src: &[u8]) {
    // Byte-wise copy: request buffers are not aligned for T.
    let len = std::mem::size_of_val(dst);
    // SAFETY: dst is a slice of plain-old-data numbers of exactly `len` bytes
    // and src holds at least `len` bytes (validated by the caller).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), len) }
}

fn from_ort_value(spec: &TensorSpec, v: &ort::value::DynValue) -> Result<Tensor, EngineError> {
    let internal = |e: ort::Error| EngineError::Internal(format!("output {}: {e}", spec.name));
    with_type!(spec.dtype, T => {
        let (shape, data) = v.try_extract_tensor::<T>().map_err(internal)?;
        let shape: Vec<i64> = shape.iter().copied().collect();
        // SAFETY: plain numbers (and bool, one byte of 0/1) viewed as bytes
        // only for the copy.
        let raw = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) };
        let bytes = Bytes::copy_from_slice(raw);
        Ok(Tensor { dtype: spec.dtype, shape, data: bytes })
    })
}

impl Backend for OrtBackend {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let mut feed: Vec<(Cow<'static, str>, SessionInputValue<'static>)> =
            Vec::with_capacity(inputs.len());
        for (spec, t) in self.signature.inputs.iter().zip(&inputs) {
            feed.push((Cow::Owned(spec.name.clone()), to_ort(t)?));
        }
        let watch = if self.metered {
            Some(WatchedRun::start()?)
        } else {
            None
        };
        let result = match &watch {
            Some(w) => self.session.run_with_options(feed, w.options()),
            None => self.session.run(feed),
        };
        if let Some(w) = &watch
            && w.refused()
        {
            // The run was stopped at an operator boundary, or (when the last
            // buffers were the ones refused) completed over the limit; either
            // way the caller should retry with less.
            let why = match &result {
                Err(e) => e.to_string(),
                Ok(_) => "an allocation was refused".to_string(),
            };
            let limit = w
                .meter()
                .limit()
                .map_or_else(|| "the system's".to_string(), |l| format!("{l} bytes"));
            return Err(EngineError::OutOfMemory(format!(
                "over the memory limit ({limit}): {why}"
            )));
        }
        let outputs = result.map_err(|e| EngineError::Internal(e.to_string()))?;
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let v = outputs.get(&spec.name).ok_or_else(|| {
                    EngineError::Internal(format!("model gave no output {}", spec.name))
                })?;
                from_ort_value(spec, v)
            })
            .collect()
    }
}
