//! Metadata, config and statistics answers as Triton writes them in JSON:
//! the protobuf messages of the gRPC service with their field names, enums
//! by name, and integers as JSON numbers (perf_analyzer reads them so).

use proto::inference::model_config::SchedulingChoice;
use proto::inference::model_metadata_response::TensorMetadata;
use proto::inference::*;
use serde_json::{Value, json};

pub fn server(m: &ServerMetadataResponse) -> Value {
    let mut extensions = m.extensions.clone();
    extensions.push("binary_tensor_data".into());
    json!({ "name": m.name, "version": m.version, "extensions": extensions })
}

fn tensor(t: &TensorMetadata) -> Value {
    json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape })
}

pub fn model(m: &ModelMetadataResponse) -> Value {
    json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": m.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "outputs": m.outputs.iter().map(tensor).collect::<Vec<_>>(),
    })
}

fn dtype(d: i32) -> &'static str {
    DataType::try_from(d).map_or("TYPE_INVALID", |d| d.as_str_name())
}

pub fn config(c: &ModelConfig) -> Value {
    let mut v = json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| json!({
            "name": i.name,
            "data_type": dtype(i.data_type),
            "format": model_input::Format::try_from(i.format)
                .map_or("FORMAT_NONE", |f| f.as_str_name()),
            "dims": i.dims,
            "optional": i.optional,
        })).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| json!({
            "name": o.name,
            "data_type": dtype(o.data_type),
            "dims": o.dims,
        })).collect::<Vec<_>>(),
        "instance_group": c.instance_group.iter().map(|g| json!({
            "name": g.name,
            "kind": model_instance_group::Kind::try_from(g.kind)
                .map_or("KIND_AUTO", |k| k.as_str_name()),
            "count": g.count,
        })).collect::<Vec<_>>(),
    });
    if let Some(SchedulingChoice::DynamicBatching(b)) = &c.scheduling_choice {
        v["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_size,
            "max_queue_delay_microseconds": b.max_queue_delay_microseconds,
            "priority_levels": b.priority_levels,
            "default_priority_level": b.default_priority_level,
        });
    }
    if let Some(p) = &c.model_transaction_policy {
        v["model_transaction_policy"] = json!({ "decoupled": p.decoupled });
    }
    v
}

fn duration(d: &Option<StatisticDuration>) -> Value {
    let d = d.unwrap_or_default();
    json!({ "count": d.count, "ns": d.ns })
}

fn model_stats(s: &ModelStatistics) -> Value {
    let i = s.inference_stats.unwrap_or_default();
    json!({
        "name": s.name,
        "version": s.version,
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration(&i.success),
            "fail": duration(&i.fail),
            "queue": duration(&i.queue),
            "compute_input": duration(&i.compute_input),
            "compute_infer": duration(&i.compute_infer),
            "compute_output": duration(&i.compute_output),
            "cache_hit": duration(&i.cache_hit),
            "cache_miss": duration(&i.cache_miss),
        },
        "batch_stats": s.batch_stats.iter().map(|b| json!({
            "batch_size": b.batch_size,
            "compute_input": duration(&b.compute_input),
            "compute_infer": duration(&b.compute_infer),
            "compute_output": duration(&b.compute_output),
        })).collect::<Vec<_>>(),
    })
}

pub fn statistics(r: &ModelStatisticsResponse) -> Value {
    json!({ "model_stats": r.model_stats.iter().map(model_stats).collect::<Vec<_>>() })
}
