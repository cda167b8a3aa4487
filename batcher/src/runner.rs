//! The batcher's loop: take the next entry (or one a dead batcher left
//! behind), do the step it stands for, record the effect, acknowledge.
//! Redis may go away at any point; every queue call is retried until it
//! answers, so a restart of Redis delays work but loses none.

use crate::config::BatcherConfig;
use crate::io::Stores;
use crate::model::Models;
use crate::shard::{ShardRun, ShardTask};
use crate::{finalize, plan_step};
use job_queue::{Entry, JobQueue, JobRecord, QueueError, Work};

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum BatcherError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

pub(crate) struct Ctx {
    pub config: BatcherConfig,
    pub stores: Stores,
    pub queue: JobQueue,
    pub models: Arc<Mutex<Models>>,
}

/// Retries a queue call while Redis is unreachable; other errors return.
pub(crate) async fn persist<T, F, Fut>(what: &str, mut f: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match f().await {
            Err(QueueError::Redis(e)) => {
                warn!(error = %e, "{what}: Redis unavailable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

/// Runs until `shutdown` resolves; the step in progress finishes first.
pub async fn run(
    config: BatcherConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BatcherError> {
    let conn = redis_conn::connect_with(
        &config.redis_url,
        redis_conn::Options {
            // Planning a large job runs long scripts.
            response_timeout: Duration::from_secs(10),
            wait_for_server: true,
        },
    )
    .await?;
    let queue = JobQueue::new(conn);
    persist("creating consumer groups", || queue.ensure_groups())
        .await
        .map_err(|e| match e {
            QueueError::Redis(e) => BatcherError::Redis(e),
            other => BatcherError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "queue",
                other.to_string(),
            ))),
        })?;
    if let Some(limit) = config.memory_limit
        && let Ok(meter) = crate::model::meter_for(config.device)
    {
        meter.set_limit(Some(limit));
    }
    let (cache_dir, own_cache) = match &config.cache_dir {
        Some(dir) => (dir.clone(), false),
        None => (default_cache_dir(&config.id), true),
    };
    let ctx = Arc::new(Ctx {
        stores: Stores::new(tokio::runtime::Handle::current(), cache_dir),
        models: Arc::new(Mutex::new(Models::new(config.clone()))),
        queue,
        config,
    });
    info!(id = %ctx.config.id, "batcher ready");
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => break,
            e = take(&ctx) => e,
        };
        match next {
            Ok(Some(e)) => handle(&ctx, e).await,
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "batcher: cannot read the queue; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if own_cache {
        // Nobody else reads a per-process cache once its process is gone.
        let _ = std::fs::remove_dir_all(ctx.stores.cache_dir());
    }
    info!(id = %ctx.config.id, "batcher stopped");
    Ok(())
}

fn default_cache_dir(id: &str) -> PathBuf {
    std::env::temp_dir()
        .join("switchboard-batch-cache")
        .join(crate::io::cache_name(id))
}

/// Work a dead batcher left comes first: its job is already running late.
async fn take(ctx: &Ctx) -> Result<Option<Entry>, QueueError> {
    let id = &ctx.config.id;
    if let Some(e) = ctx.queue.reclaim(id, ctx.config.visibility_timeout).await? {
        info!(job = %e.job, entry = %e.id, "reclaimed an entry from a silent batcher");
        return Ok(Some(e));
    }
    ctx.queue.next(id, Duration::from_millis(500)).await
}

async fn handle(ctx: &Arc<Ctx>, e: Entry) {
    let job = match persist("reading a job", || ctx.queue.get(&e.job)).await {
        Ok(j) => j,
        Err(err) => {
            // A job that no longer exists has nothing left to do.
            warn!(job = %e.job, error = %err, "dropping an entry for an unreadable job");
            let _ = persist("ack", || ctx.queue.ack(&e)).await;
            return;
        }
    };
    if job.state.is_final() {
        let _ = persist("ack", || ctx.queue.ack(&e)).await;
        return;
    }
    // Keep the entry ours while the step runs.
    let beat = {
        let (ctx, e) = (ctx.clone(), e.clone());
        let every = ctx.config.visibility_timeout / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = ctx.queue.touch(&ctx.config.id, &e).await;
            }
        })
    };
    let result = match &e.work {
        Work::Plan => plan_step::plan(ctx, &e, &job).await,
        Work::Shard { index, piece } => shard(ctx, &e, &job, *index, piece).await,
        Work::Finalize => finalize::finalize(ctx, &e).await,
    };
    beat.abort();
    if let Err(err) = result {
        warn!(job = %e.job, entry = %e.id, error = %err, "step left for another try");
    }
}

async fn shard(
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
        .await;
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
                let shapes = crate::shard::row_shapes(&model.signature, &task.inputs);
                model.lower_fit(&shapes, o.batch);
            }
            if !o.stopped {
                let format = task.output_format;
                crate::shard::publish(&out, index, format, job.spec.summary_only, o.failed)
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
        Ok(o) if o.stopped => {
            info!(job = %job.id, shard = index, "shard stopped: job cancelled or failed");
            persist("skipping a shard", || {
                q.complete(e, &ctx.config.id, index, 0, 0)
            })
            .await
        }
        Ok(o) => {
            // Recorded once per new low, not once per shard that halved
            // from the job's fixed size again.
            if o.halvings > 0 {
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
            persist("completing a shard", || {
                q.complete(e, &ctx.config.id, index, o.done, o.failed)
            })
            .await
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
    let rows: Vec<crate::io::RowError> = (0..task.piece.rows)
        .map(|i| crate::io::RowError {
            row: task.piece.first_row + i,
            reason: why.clone(),
        })
        .collect();
    let written = {
        let (ctx, output) = (ctx.clone(), job.spec.output.clone());
        tokio::task::spawn_blocking(move || write_dead_errors(&ctx.stores, &output, index, &rows))
            .await
            .unwrap_or_else(|e| Err(crate::io::IoError::invalid(e.to_string())))
    };
    if let Err(err) = written {
        warn!(error = %err, "cannot write the dead shard's errors");
    }
    persist("dead-lettering a shard", || q.dead_letter(e, index, &why)).await?;
    persist("completing a dead shard", || {
        q.complete(e, &ctx.config.id, index, 0, task.piece.rows)
    })
    .await
}

fn write_dead_errors(
    stores: &Stores,
    output: &str,
    index: u32,
    rows: &[crate::io::RowError],
) -> Result<(), crate::io::IoError> {
    let out = stores.output(output)?;
    let path = crate::shard::errors_path(out.dir(), index);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::io::write_jsonl_atomic(&path, rows)?;
    out.publish(&crate::shard::errors_name(index))
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
            let shapes = crate::shard::row_shapes(&sig, &inputs);
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
/// so a running shard ends within one mini-batch.
async fn watch_stop(ctx: Arc<Ctx>, job: String, stop: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(j) = ctx.queue.get(&job).await
            && (j.cancel_requested || j.over_threshold() || j.state.is_final())
        {
            stop.store(true, Ordering::Relaxed);
            return;
        }
    }
}
