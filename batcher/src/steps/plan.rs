//! Planning: a queued job becomes shards (row ranges or row groups) on the
//! work stream, with its input columns bound to the model's inputs. A spec
//! that cannot run (no such input, columns that do not fit the model) ends
//! the job `failed` here, with the reason, before any row is scored.

use super::{Ctx, persist};
use crate::bind::bind;
use crate::layout::is_job_output;
use crate::shard::ShardTask;
use job_queue::{Entry, Format, JobRecord, JobState, QueueError};
use std::sync::Arc;
use tracing::{info, warn};

pub(crate) async fn plan(ctx: &Arc<Ctx>, e: &Entry, job: &JobRecord) -> Result<(), QueueError> {
    let q = &ctx.queue;
    if job.state != JobState::Queued {
        return persist("ack", || q.ack(e)).await;
    }
    let made = {
        let (ctx, job) = (ctx.clone(), job.clone());
        tokio::task::spawn_blocking(move || make_plan(&ctx, &job))
            .await
            .unwrap_or_else(|e| Err(format!("planning thread: {e}")))
    };
    match made {
        Ok((rows, pieces)) => {
            info!(job = %job.id, rows, shards = pieces.len(), "job planned");
            persist("recording a plan", || q.plan(e, job, rows, &pieces)).await
        }
        Err(msg) => {
            warn!(job = %job.id, error = %msg, "job cannot run");
            persist("failing a job", || {
                q.finish_from(e, Some(JobState::Queued), JobState::Failed, &msg, "", "")
            })
            .await
        }
    }
}

fn make_plan(ctx: &Ctx, job: &JobRecord) -> Result<(u64, Vec<String>), String> {
    let spec = &job.spec;
    let plan = ctx
        .stores
        .plan(
            &spec.input,
            spec.input_format,
            u64::from(spec.shard_rows.max(1)),
            spec.csv_header,
        )
        .map_err(|e| format!("input '{}': {e}", spec.input))?;
    let sig = {
        // A panic elsewhere must not stop all later jobs: the cache holds
        // nothing a half-finished step could have broken.
        let mut models = ctx.models.lock().unwrap_or_else(|p| p.into_inner());
        let model = models
            .get(&spec.model_uri)
            .map_err(|e| format!("model '{}': {e}", spec.model_uri))?;
        model.signature.clone()
    };
    let inputs = bind(&sig, &plan.columns, &spec.bindings)?;
    if spec.mini_batch_size == 0 {
        // Found here, not once per shard: every shard would fail alike.
        crate::model::meter_for(ctx.config.device).map_err(|e| e.to_string())?;
    }
    let output_format = spec
        .output_format
        .or(spec.input_format)
        .or_else(|| plan.pieces.first().map(|p| p.format))
        .unwrap_or(Format::Csv);
    let out_err = |e: crate::io::IoError| format!("output '{}': {e}", spec.output);
    let out = ctx.stores.output(&spec.output).map_err(out_err)?;
    out.prepare().map_err(out_err)?;
    // The final step removes parts that no shard of this job owns, so a
    // folder holding another job's output (or input files named like
    // parts) is refused before anything in it is touched.
    if let Some(name) = out
        .list()
        .map_err(out_err)?
        .into_iter()
        .find(|n| is_job_output(n))
    {
        return Err(format!(
            "output '{}' already holds '{name}' (another job's output?); give an empty or new folder",
            spec.output
        ));
    }
    let pieces = plan
        .pieces
        .into_iter()
        .map(|piece| {
            serde_json::to_string(&ShardTask {
                piece,
                inputs: inputs.clone(),
                output_format,
            })
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((plan.rows_total, pieces))
}
