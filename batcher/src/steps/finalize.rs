//! The job's last step, queued once by whichever batcher counted the last
//! shard: merge the shards' error files, drop what no counted shard owns
//! (temp files of dead writers, parts of shards skipped by a cancel), write
//! the manifest, then set the final state. Every step can run again. For a
//! remote output the same is done through the store (list, get, put,
//! delete): see [`crate::io::OutputDir`].

use super::{Ctx, persist};
use crate::io::{IoError, Stores};
use crate::layout::{self, ERRORS, MANIFEST};
use job_queue::{Entry, JobRecord, JobState, QueueError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub(crate) async fn finalize(ctx: &Arc<Ctx>, e: &Entry) -> Result<(), QueueError> {
    let q = &ctx.queue;
    let job = persist("reading a job", || q.get(&e.job)).await?;
    if job.state.is_final() {
        return persist("ack", || q.ack(e)).await;
    }
    let parts = persist("reading parts", || q.parts(&e.job)).await?;
    let state = job.final_state();
    let written = {
        let (ctx, job, parts) = (ctx.clone(), job.clone(), parts.clone());
        tokio::task::spawn_blocking(move || write_outputs(&ctx.stores, &job, &parts, state))
            .await
            .unwrap_or_else(|e| Err(IoError::invalid(format!("final step thread: {e}"))))
    };
    let (manifest, errors) = match written {
        Ok(paths) => paths,
        Err(err) => {
            // The output folder may be unwritable for a while: retry like a
            // shard, then end the job failed with the reason rather than
            // keep it running for ever.
            warn!(job = %job.id, error = %err, "cannot write the manifest");
            let why = format!("cannot write the job's output: {err}");
            let tries = persist("counting an attempt", || q.final_attempt(&job.id)).await?;
            if tries > u64::from(job.spec.max_retries) {
                return persist("failing a job", || {
                    q.finish(e, JobState::Failed, &why, "", "")
                })
                .await;
            }
            // Back off before queueing the retry (doubling, and within a
            // third of the visibility timeout so the entry is not taken
            // over meanwhile), or all tries would land in a millisecond.
            let cap = ctx.config.visibility_timeout / 3;
            let wait = Duration::from_millis(500 << tries.min(6)).min(cap);
            tokio::time::sleep(wait).await;
            return persist("retrying the final step", || q.retry(e, &why)).await;
        }
    };
    let message = match state {
        JobState::Failed => format!(
            "{} rows failed, more than error_threshold {}",
            job.rows_failed, job.spec.error_threshold
        ),
        JobState::Cancelled => "cancelled on request".to_string(),
        JobState::PartiallySucceeded => {
            format!("{} rows failed; see the errors file", job.rows_failed)
        }
        _ => String::new(),
    };
    info!(job = %job.id, %state, rows = job.rows_done, failed = job.rows_failed, "job finished");
    persist("finishing a job", || {
        q.finish(e, state, &message, &manifest, &errors)
    })
    .await
}

fn write_outputs(
    stores: &Stores,
    job: &JobRecord,
    parts: &[(u32, u64, u64)],
    state: JobState,
) -> Result<(String, String), IoError> {
    let out = stores.output(&job.spec.output)?;
    out.prepare()?;
    // Error files in shard order, so rows come out in input order.
    let has_errors = parts.iter().any(|p| p.2 > 0);
    if has_errors {
        let errors = out.dir().join(ERRORS);
        let tmp = out.dir().join(layout::merge_temp_name(ERRORS));
        let io = |e| IoError::io(&tmp, e);
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        for &(shard, _, failed) in parts {
            if failed > 0 {
                out.copy_to(&layout::shard_errors_name(shard), &mut w)?;
            }
        }
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&tmp, &errors).map_err(|e| IoError::io(&errors, e))?;
        out.publish(ERRORS)?;
    }
    let mut listed = Vec::new();
    let owned: Vec<u32> = parts.iter().filter(|p| p.1 > 0).map(|p| p.0).collect();
    for name in out.list()? {
        if layout::is_temp(&name) && layout::is_job_output(&name) {
            let _ = out.remove(&name);
        } else if let Some(shard) = layout::part_shard(&name) {
            if owned.contains(&shard) && !job.spec.summary_only {
                listed.push((shard, name));
            } else {
                let _ = out.remove(&name);
            }
        }
    }
    listed.sort();
    let rows_of = |s: u32| parts.iter().find(|p| p.0 == s).map_or(0, |p| p.1);
    let manifest = json!({
        "job": job.id,
        "state": state.as_str(),
        "endpoint": job.spec.endpoint,
        "deployment": job.spec.deployment,
        "model": job.spec.model_uri,
        "input": job.spec.input,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "rows_failed": job.rows_failed,
        "rows_not_run": job.rows_total.saturating_sub(job.rows_done + job.rows_failed),
        "shards_total": job.shards_total,
        "batch_size": job.batch_size,
        "batch_fit": job.batch_fit,
        "parts": listed.iter().map(|(s, n)| json!({"file": n, "shard": s, "rows": rows_of(*s)})).collect::<Vec<_>>(),
        "errors": if has_errors { json!(ERRORS) } else { json!(null) },
    });
    out.write_file(MANIFEST, &serde_json::to_vec_pretty(&manifest)?)?;
    Ok((
        out.url(MANIFEST),
        if has_errors {
            out.url(ERRORS)
        } else {
            String::new()
        },
    ))
}
