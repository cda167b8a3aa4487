use super::{Device, EngineError, ModelSignature, Tensor};

/// A loaded model instance. `run` takes `&mut self` because ONNX Runtime's
/// session does; each instance lives on its own thread, so no lock is needed.
pub trait Backend: Send {
    fn signature(&self) -> &ModelSignature;
    /// Inputs arrive in signature order; outputs leave in signature order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>;
}

/// Builds instances of one model; called once per instance thread.
pub trait BackendFactory: Send + Sync {
    fn create(&self) -> Result<Box<dyn Backend>, EngineError>;
    fn signature(&self) -> &ModelSignature;
    /// Triton's name for the backend (`onnxruntime_onnx`,
    /// `pytorch_libtorch`), as model metadata and config report it.
    fn platform(&self) -> &'static str;
    /// Whether runs go through the metered allocator (`cpu_meter`), so a
    /// batch's memory peak can be read for `auto` mini-batches.
    fn metered(&self) -> bool {
        false
    }
    /// Where its instances run (a simulated GPU's on the CPU).
    fn device(&self) -> Device;
}
