//! A shard entry: score the shard's rows (on blocking threads, see
//! [`crate::shard`]), record its counts, and on failure retry it or, after
//! `max_retries`, dead-letter it: its rows then count as failed, so that the
//! job's books still balance.

use super::{Ctx, persist};
use crate::io::{IoError, RowError, Stores};
use crate::layout;
use crate::shard::{ShardRun, ShardTask, publish, row_shapes};
use job_queue::{Entry, JobRecord, QueueError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{info, warn};

pub(crate) async fn shard(
    ctx: &Arc<Ctx>,
    e: &Entry,
    job: &JobRecord,
    index: u32,
    piece: &str,
) -> Result<(), QueueError> {
    let q = &ctx.queue;
    if job.cancel_requested || job.over_threshold() {
        return persist("skipping a shard", || {
            q.complete(e, &ctx.config.id, index, 0, 0)
        })
        .await
        .map(|_| ());
    }
    let Ok(task) = serde_json::from_str::<ShardTask>(piece) else {
        warn!(job = %job.id, shard = index, "unreadable shard entry; dropping it");
        return persist("ack", || q.ack(e)).await;
    };
    let attempts = persist("counting an attempt", || q.attempt(&job.id, index)).await?;
    if attempts > u64::from(job.spec.max_retries) + 1 {
        // The attempts before this one all ended without a result.
        return dead_letter(ctx, e, job, index, &task, attempts - 1, None).await;
    }
    let batch = match batch_size(ctx, job, &task).await {
        Ok(b) => b,
        Err(msg) => return retry_or_dead(ctx, e, job, index, &task, attempts, &msg).await,
    };
    let started = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn(watch_stop(ctx.clone(), job.id.clone(), stop.clone()));
    let run = {
        let (ctx, job, task, stop) = (ctx.clone(), job.clone(), task.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut models = ctx.models.lock().unwrap_or_else(|p| p.into_inner());
            let model = models.get(&job.spec.model_uri).map_err(|e| e.to_string())?;
            let out = ctx
                .stores
                .output(&job.spec.output)
                .map_err(|e| e.to_string())?;
            out.prepare().map_err(|e| e.to_string())?;
            let o = ShardRun {
                stores: &ctx.stores,
                backend: model.backend.as_mut(),
                task: &task,
                index,
                out_dir: out.dir(),
                summary_only: job.spec.summary_only,
                allow_nan: job.spec.allow_nan,
                batch,
                stop: &stop,
            }
            .run()
            .map_err(|e| e.to_string())?;
            if o.halvings > 0 && job.spec.mini_batch_size == 0 {
                let shapes = row_shapes(&model.signature, &task.inputs);
                model.lower_fit(&shapes, o.batch);
            }
            if !o.stopped {
                let format = task.output_format;
                publish(&out, index, format, job.spec.summary_only, o.failed)
                    .map_err(|e| e.to_string())?;
            }
            Ok(o)
        })
    };
    let result = run
        .await
        .map_err(|e| format!("shard thread: {e}"))
        .and_then(|r| r);
    watch.abort();
    match result {
        Ok(o) if o.stopped && ctx.draining() => {
            // Nothing of it was kept; the next batcher runs it whole.
            let released = persist("handing a shard back", || q.release(e, &ctx.config.id)).await?;
            info!(job = %job.id, shard = index, released, "draining: shard handed back");
            Ok(())
        }
        Ok(o) if o.stopped => {
            info!(job = %job.id, shard = index, "shard stopped: job cancelled or failed");
            persist("skipping a shard", || {
                q.complete(e, &ctx.config.id, index, 0, 0)
            })
            .await
            .map(|_| ())
        }
        Ok(o) => {
            // Recorded once per new low, not once per shard that halved
            // from the job's fixed size again.
            if o.halvings > 0 {
                crate::telemetry::record_halvings(&job.spec.endpoint, o.halvings as u64);
                persist("counting a halving", || q.count_halving(&job.id)).await?;
                let recorded = persist("reading a job", || q.get(&job.id)).await?;
                if (o.batch as u32) < recorded.batch_size {
                    let fit = format!(
                        "{}; halved {} times after allocation failures, to {}",
                        recorded.batch_fit, o.halvings, o.batch
                    );
                    persist("recording the batch", || {
                        q.set_batch(&job.id, o.batch as u32, &fit)
                    })
                    .await?;
                }
            }
            info!(job = %job.id, shard = index, rows = o.done, failed = o.failed, "shard done");
            let counted = persist("completing a shard", || {
                q.complete(e, &ctx.config.id, index, o.done, o.failed)
            })
            .await?;
            if counted {
                let took = started.elapsed();
                crate::telemetry::record_shard(&job.spec.endpoint, o.done, o.failed, took, o.batch);
            } else {
                info!(job = %job.id, shard = index, "shard was counted by another batcher first");
            }
            Ok(())
        }
        Err(msg) => retry_or_dead(ctx, e, job, index, &task, attempts, &msg).await,
    }
}

async fn retry_or_dead(
    ctx: &Arc<Ctx>,
    e: &Entry,
    job: &JobRecord,
    index: u32,
    task: &ShardTask,
    attempts: u64,
    msg: &str,
) -> Result<(), QueueError> {
    warn!(job = %job.id, shard = index, attempts, error = msg, "shard failed");
    if attempts > u64::from(job.spec.max_retries) {
        return dead_letter(ctx, e, job, index, task, attempts, Some(msg)).await;
    }
    persist("retrying a shard", || ctx.queue.retry(e, msg)).await
}

/// Its rows count as failed and are listed in the errors file, so that the
/// job's books still balance.
async fn dead_letter(
    ctx: &Arc<Ctx>,
    e: &Entry,
    job: &JobRecord,
    index: u32,
    task: &ShardTask,
    failures: u64,
    last: Option<&str>,
) -> Result<(), QueueError> {
    let q = &ctx.queue;
    let last = match last {
        Some(m) => m.to_string(),
        None => last_error(&persist("reading a job", || q.get(&job.id)).await?),
    };
    let why = format!("shard {index} failed {failures} times; last error: {last}");
    let rows: Vec<RowError> = (0..task.piece.rows)
        .map(|i| RowError {
            row: task.piece.first_row + i,
            reason: why.clone(),
        })
        .collect();
    let written = {
        let (ctx, output) = (ctx.clone(), job.spec.output.clone());
        tokio::task::spawn_blocking(move || write_dead_errors(&ctx.stores, &output, index, &rows))
            .await
            .unwrap_or_else(|e| Err(IoError::invalid(e.to_string())))
    };
    if let Err(err) = written {
        warn!(error = %err, "cannot write the dead shard's errors");
    }
    persist("dead-lettering a shard", || q.dead_letter(e, index, &why)).await?;
    let counted = persist("completing a dead shard", || {
        q.complete(e, &ctx.config.id, index, 0, task.piece.rows)
    })
    .await?;
    if counted {
        crate::telemetry::record_dead_letter(&job.spec.endpoint, task.piece.rows);
    }
    Ok(())
}

fn write_dead_errors(
    stores: &Stores,
    output: &str,
    index: u32,
    rows: &[RowError],
) -> Result<(), IoError> {
    let out = stores.output(output)?;
    let path = layout::shard_errors_path(out.dir(), index);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::io::write_jsonl_atomic(&path, rows)?;
    out.publish(&layout::shard_errors_name(index))
}

fn last_error(job: &JobRecord) -> String {
    if job.last_error.is_empty() {
        "unknown (the batcher running it died)".into()
    } else {
        job.last_error.clone()
    }
}

/// The job's mini-batch: fixed by the job, or sized to memory once per
/// model and row shape (and recorded on the job the first time).
async fn batch_size(ctx: &Arc<Ctx>, job: &JobRecord, task: &ShardTask) -> Result<usize, String> {
    if job.spec.mini_batch_size > 0 {
        if job.batch_size == 0 {
            let _ = ctx
                .queue
                .set_batch(&job.id, job.spec.mini_batch_size, "fixed by the job")
                .await;
        }
        return Ok(job.spec.mini_batch_size as usize);
    }
    let fit = {
        let (ctx, uri, inputs) = (ctx.clone(), job.spec.model_uri.clone(), task.inputs.clone());
        tokio::task::spawn_blocking(move || {
            let mut models = ctx.models.lock().unwrap_or_else(|p| p.into_inner());
            let sig = models
                .get(&uri)
                .map_err(|e| e.to_string())?
                .signature
                .clone();
            let shapes = row_shapes(&sig, &inputs);
            models.fit(&uri, &shapes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("sizing thread: {e}"))??
    };
    if job.batch_size == 0 {
        let _ = ctx
            .queue
            .set_batch(&job.id, fit.batch as u32, &fit.to_string())
            .await;
    }
    Ok(fit.batch)
}

/// Sets `stop` when the job is cancelled or has failed past its threshold,
/// or the batcher drains, so a running shard ends within one mini-batch.
async fn watch_stop(ctx: Arc<Ctx>, job: String, stop: Arc<AtomicBool>) {
    let mut drain = ctx.drain.subscribe();
    loop {
        tokio::select! {
            _ = drain.wait_for(|d| *d) => {
                stop.store(true, Ordering::Relaxed);
                return;
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if let Ok(j) = ctx.queue.get(&job).await
            && (j.cancel_requested || j.over_threshold() || j.state.is_final())
        {
            stop.store(true, Ordering::Relaxed);
            return;
        }
    }
}
