//! One entry point for every model file, so the worker and the batcher
//! serve TorchScript where they serve ONNX without knowing which is which.

use super::{BackendFactory, EngineError, OrtFactory, OrtOptions};
use std::path::Path;
use std::sync::Arc;

/// Opens a model with the backend its file name calls for: `.pt`, `.pts`
/// or `.torchscript` through libtorch (the `torch` feature), anything else
/// through ONNX Runtime.
pub fn open_model(
    path: &Path,
    options: &OrtOptions,
) -> Result<Arc<dyn BackendFactory>, EngineError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("pt" | "pts" | "torchscript") => torchscript(path, options),
        _ => Ok(Arc::new(OrtFactory::new(path, options.clone())?)),
    }
}

#[cfg(feature = "torch")]
fn torchscript(path: &Path, options: &OrtOptions) -> Result<Arc<dyn BackendFactory>, EngineError> {
    Ok(Arc::new(super::TorchFactory::new(path, options)?))
}

#[cfg(not(feature = "torch"))]
fn torchscript(path: &Path, _: &OrtOptions) -> Result<Arc<dyn BackendFactory>, EngineError> {
    Err(EngineError::InvalidArgument(format!(
        "{}: a TorchScript model needs a build with the `torch` feature",
        path.display()
    )))
}
