//! The models a batcher has loaded, one metered engine instance each, and
//! the batch size each job runs them at.

use crate::config::BatcherConfig;
use crate::sizing::{self, Fit};
use engine::{Backend, DataType, Device, EngineError, ModelSignature, OrtOptions};
use std::collections::HashMap;

pub struct Model {
    pub backend: Box<dyn Backend>,
    pub signature: ModelSignature,
    /// Whether its runs are seen by the memory meter (ONNX Runtime's are;
    /// libtorch allocates through its own allocator).
    metered: bool,
    /// Memory fits by row shape (the same model may be fed rows of another
    /// width only when it has dynamic dims, but keep them apart anyway).
    fits: HashMap<Vec<(DataType, Vec<i64>)>, Fit>,
}

impl Model {
    /// Lowers the batch of a memory fit after scoring had to halve it, so
    /// the next shard starts at a size that fits instead of failing again.
    pub fn lower_fit(&mut self, row_shapes: &[(DataType, Vec<i64>)], batch: usize) {
        if let Some(f) = self.fits.get_mut(row_shapes) {
            f.batch = f.batch.min(batch.max(1));
        }
    }
}

/// A handful of models is plenty: a batcher works on one job at a time and
/// jobs of one endpoint share a model.
const KEEP: usize = 4;

pub struct Models {
    config: BatcherConfig,
    loaded: HashMap<String, Model>,
}

impl Models {
    pub fn new(config: BatcherConfig) -> Self {
        Models {
            config,
            loaded: HashMap::new(),
        }
    }

    pub fn get(&mut self, uri: &str) -> Result<&mut Model, EngineError> {
        if !self.loaded.contains_key(uri) {
            if self.loaded.len() >= KEEP {
                self.loaded.clear();
            }
            let path = uri.strip_prefix("file://").unwrap_or(uri);
            let factory = engine::open_model(
                std::path::Path::new(path),
                &OrtOptions {
                    intra_threads: self.config.intra_threads,
                    device: self.config.device,
                    metered: true,
                },
            )?;
            let model = Model {
                backend: factory.create()?,
                signature: factory.signature().clone(),
                metered: factory.metered(),
                fits: HashMap::new(),
            };
            self.loaded.insert(uri.to_string(), model);
        }
        self.loaded
            .get_mut(uri)
            .ok_or_else(|| EngineError::Runtime("model cache lost an entry".into()))
    }

    /// The memory fit for rows of this shape, measured on first use.
    pub fn fit(
        &mut self,
        uri: &str,
        row_shapes: &[(DataType, Vec<i64>)],
    ) -> Result<Fit, EngineError> {
        let config = self.config.clone();
        let model = self.get(uri)?;
        if let Some(f) = model.fits.get(row_shapes) {
            return Ok(f.clone());
        }
        if !model.metered {
            return Err(EngineError::InvalidArgument(format!(
                "{uri}: mini_batch_size auto measures memory through ONNX Runtime's allocator, \
                 which this model does not use; give a number"
            )));
        }
        let meter = meter_for(config.device)?;
        let budget = config.device.memory_budget(config.memory_budget)?;
        // The hard cap applies to scoring, not to measuring: sizing must see
        // what the model really needs for the cap to bite afterwards.
        meter.set_limit(None);
        let fit = sizing::fit_batch(
            model.backend.as_mut(),
            meter,
            row_shapes,
            budget,
            config.utilisation,
            config.max_auto_batch,
        );
        meter.set_limit(config.allocation_limit()?);
        let fit = fit?;
        tracing::info!(model = uri, %fit, "mini-batch sized to memory");
        model.fits.insert(row_shapes.to_vec(), fit.clone());
        Ok(fit)
    }
}

/// The meter that sees the device's allocations: the metered CPU allocator,
/// on the CPU and on a simulated GPU. A real GPU's reading (the driver's
/// free memory around a run) is not built yet.
pub fn meter_for(device: Device) -> Result<&'static engine::MemoryMeter, EngineError> {
    if device.runs_on_cpu()? {
        return engine::cpu_meter();
    }
    Err(EngineError::InvalidArgument(format!(
        "mini_batch_size auto measures memory on the CPU (or a simulated GPU) only in this \
         version, not on {device}; give a number"
    )))
}
