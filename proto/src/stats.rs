//! Summing ModelStatistics: several replicas of one deployment, or several
//! deployments of one endpoint.
//!
//! When a request names no version, servers answer one entry per endpoint
//! with version "1": Triton's versions are numbers, and perf_analyzer parses
//! them as integers (a deployment name there aborts it).

/// The version reported for an endpoint's summed statistics.
pub const SUMMED_VERSION: &str = "1";

use crate::inference::{InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration};

fn add(a: Option<StatisticDuration>, b: Option<StatisticDuration>) -> Option<StatisticDuration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(StatisticDuration {
            count: a.count + b.count,
            ns: a.ns + b.ns,
        }),
        (a, b) => a.or(b),
    }
}

pub fn merge(mut a: ModelStatistics, b: ModelStatistics) -> ModelStatistics {
    a.last_inference = a.last_inference.max(b.last_inference);
    a.inference_count += b.inference_count;
    a.execution_count += b.execution_count;
    a.inference_stats = match (a.inference_stats.take(), b.inference_stats) {
        (Some(x), Some(y)) => Some(InferStatistics {
            success: add(x.success, y.success),
            fail: add(x.fail, y.fail),
            queue: add(x.queue, y.queue),
            compute_input: add(x.compute_input, y.compute_input),
            compute_infer: add(x.compute_infer, y.compute_infer),
            compute_output: add(x.compute_output, y.compute_output),
            cache_hit: add(x.cache_hit, y.cache_hit),
            cache_miss: add(x.cache_miss, y.cache_miss),
        }),
        (x, y) => x.or(y),
    };
    for bs in b.batch_stats {
        match a
            .batch_stats
            .iter_mut()
            .find(|x| x.batch_size == bs.batch_size)
        {
            Some(x) => {
                *x = InferBatchStatistics {
                    batch_size: x.batch_size,
                    compute_input: add(x.compute_input, bs.compute_input),
                    compute_infer: add(x.compute_infer, bs.compute_infer),
                    compute_output: add(x.compute_output, bs.compute_output),
                }
            }
            None => a.batch_stats.push(bs),
        }
    }
    a.batch_stats.sort_by_key(|b| b.batch_size);
    a
}
