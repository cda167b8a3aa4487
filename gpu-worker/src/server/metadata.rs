//! Metadata, config and statistics answers. ModelConfig is Triton's
//! extension: perf_analyzer reads `max_batch_size` and the tensors' dims
//! (without the batch dimension when the model batches) from it.

use super::convert::config_dtype;
use crate::scheduler::{Duration64, Scheduler};
use engine::{Device, TensorSpec};
use proto::inference::model_metadata_response::TensorMetadata;
use proto::inference::*;

pub fn server() -> ServerMetadataResponse {
    ServerMetadataResponse {
        name: "switchboard".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["model_configuration".into(), "statistics".into()],
    }
}

pub fn model(name: &str, deployment: &str, s: &Scheduler) -> ModelMetadataResponse {
    let meta = |t: &TensorSpec| TensorMetadata {
        name: t.name.clone(),
        datatype: t.dtype.v2_name().into(),
        shape: t.dims.clone(),
    };
    ModelMetadataResponse {
        name: name.into(),
        versions: vec![deployment.into()],
        platform: s.platform().into(),
        inputs: s.signature().inputs.iter().map(meta).collect(),
        outputs: s.signature().outputs.iter().map(meta).collect(),
    }
}

pub fn config(name: &str, s: &Scheduler) -> ModelConfig {
    let sig = s.signature();
    let cfg = s.config();
    let batched = cfg.max_batch_size > 0;
    let dims = |t: &TensorSpec| {
        if batched {
            t.dims[1..].to_vec()
        } else {
            t.dims.clone()
        }
    };
    ModelConfig {
        name: name.into(),
        platform: s.platform().into(),
        // Triton's backend name is the platform's first word
        // (`onnxruntime_onnx` → `onnxruntime`, `pytorch_libtorch` → `pytorch`).
        backend: s.platform().split('_').next().unwrap_or_default().into(),
        max_batch_size: cfg.max_batch_size as i32,
        input: sig
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: config_dtype(t.dtype),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        output: sig
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: config_dtype(t.dtype),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        instance_group: instance_groups(name, s.devices()),
        scheduling_choice: batched.then(|| {
            model_config::SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                preferred_batch_size: cfg
                    .preferred_batch_sizes
                    .iter()
                    .map(|&b| b as i32)
                    .collect(),
                max_queue_delay_microseconds: cfg.max_queue_delay.as_micros() as u64,
                priority_levels: u64::from(cfg.priority_levels),
                default_priority_level: u64::from(cfg.default_priority),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

fn dur(d: Duration64) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

pub fn statistics(name: &str, deployment: &str, s: &Scheduler) -> ModelStatistics {
    let st = s.stats();
    ModelStatistics {
        name: name.into(),
        version: deployment.into(),
        last_inference: st.last_inference_ms,
        inference_count: st.inference_count,
        execution_count: st.execution_count,
        inference_stats: Some(InferStatistics {
            success: dur(st.success),
            fail: dur(st.fail),
            queue: dur(st.queue),
            compute_input: dur(st.compute_input),
            compute_infer: dur(st.compute_infer),
            compute_output: dur(st.compute_output),
            cache_hit: dur(Duration64::default()),
            cache_miss: dur(Duration64::default()),
        }),
        batch_stats: st
            .batches
            .iter()
            .map(|(&size, b)| InferBatchStatistics {
                batch_size: size as u64,
                compute_input: dur(b.compute_input),
                compute_infer: dur(b.compute_infer),
                compute_output: dur(b.compute_output),
            })
            .collect(),
        ..Default::default()
    }
}

/// One group per device, as Triton's config lists them: KIND_CPU, or
/// KIND_GPU with the GPU's ordinal.
fn instance_groups(name: &str, devices: &[Device]) -> Vec<ModelInstanceGroup> {
    let mut groups: Vec<(Device, i32)> = Vec::new();
    for &d in devices {
        match groups.iter_mut().find(|(g, _)| *g == d) {
            Some((_, count)) => *count += 1,
            None => groups.push((d, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(d, count)| {
            let (kind, gpus) = match d {
                Device::Cpu => (model_instance_group::Kind::Cpu, vec![]),
                Device::Cuda(n) => (model_instance_group::Kind::Gpu, vec![n as i32]),
            };
            ModelInstanceGroup {
                name: format!("{name}_{}", d.to_string().replace(':', "")),
                kind: kind as i32,
                count,
                gpus,
            }
        })
        .collect()
}
