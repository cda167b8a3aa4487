//! The batcher's loop: take the next entry (or one a dead batcher left
//! behind), keep it ours with heartbeats while the step it stands for runs
//! (see [`crate::steps`]), until shutdown. Redis may go away at any point;
//! every queue call is retried until it answers, so a restart of Redis
//! delays work but loses none.

use crate::config::BatcherConfig;
use crate::io::Stores;
use crate::model::Models;
use crate::steps::{self, Ctx, persist};
use job_queue::{Entry, JobQueue, QueueError, Work};

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tracing::{Instrument, info, warn};

#[derive(Debug, Error)]
pub enum BatcherError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job queue: {0}")]
    Queue(#[from] QueueError),
    #[error("device: {0}")]
    Device(#[from] engine::EngineError),
}

/// Runs until `shutdown` resolves, then drains: takes nothing more; a
/// running shard stops within one mini-batch and is handed back to the
/// queue for the next batcher (a shard may run for minutes, longer than
/// any drain should); a plan or final step finishes. All within
/// `drain_timeout`; past it the entry is left to the visibility timeout.
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
    persist("creating consumer groups", || queue.ensure_groups()).await?;
    if let Some(limit) = config.allocation_limit()?
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
        drain: tokio::sync::watch::channel(false).0,
    });
    let poll = tokio::spawn(crate::telemetry::poll(
        ctx.queue.clone(),
        Duration::from_secs(5),
    ));
    ctx.config.ready.store(true, Ordering::Relaxed);
    info!(id = %ctx.config.id, "batcher ready");
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => break,
            e = take(&ctx) => e,
        };
        match next {
            Ok(Some(e)) => {
                let step = handle(&ctx, e);
                tokio::pin!(step);
                tokio::select! {
                    () = &mut step => {}
                    () = &mut shutdown => {
                        drain(&ctx, step).await;
                        break;
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "batcher: cannot read the queue; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    ctx.config.ready.store(false, Ordering::Relaxed);
    if own_cache {
        // Nobody else reads a per-process cache once its process is gone.
        let _ = std::fs::remove_dir_all(ctx.stores.cache_dir());
    }
    poll.abort();
    info!(id = %ctx.config.id, "batcher stopped");
    Ok(())
}

/// Drains with a step in progress: it finishes, or (a shard) stops and
/// hands its entry back, within the drain timeout.
async fn drain(ctx: &Ctx, step: impl Future<Output = ()>) {
    ctx.config.ready.store(false, Ordering::Relaxed);
    ctx.drain.send_replace(true);
    info!(id = %ctx.config.id, "draining: the step in progress finishes or hands its shard back");
    if tokio::time::timeout(ctx.config.drain_timeout, step)
        .await
        .is_err()
    {
        warn!(id = %ctx.config.id, "drain timeout passed; the entry is left to the visibility timeout");
    }
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
                // A draining batcher hands its entry back idle; a touch
                // now would make the next batcher wait for it again.
                if ctx.draining() {
                    return;
                }
                let _ = ctx.queue.touch(&ctx.config.id, &e).await;
            }
        })
    };
    // Each step is a span in the trace of the call that submitted the job.
    let (step, shard) = match &e.work {
        Work::Plan => ("plan", None),
        Work::Shard { index, .. } => ("shard", Some(*index)),
        Work::Finalize => ("finalize", None),
    };
    let submitted = &job.trace;
    let submitted =
        trace_context::Carrier::from_fields(&submitted.traceparent, &submitted.tracestate);
    let span = trace_context::entry_span(
        &submitted,
        || tracing::debug_span!(target: trace_context::TARGET, "step", otel.name = step, job = %e.job, shard),
    );
    let work = async {
        match &e.work {
            Work::Plan => steps::plan(ctx, &e, &job).await,
            Work::Shard { index, piece } => steps::shard(ctx, &e, &job, *index, piece).await,
            Work::Finalize => steps::finalize(ctx, &e).await,
        }
    };
    let result = work.instrument(span).await;
    beat.abort();
    if let Err(err) = result {
        warn!(job = %e.job, entry = %e.id, error = %err, "step left for another try");
    }
}
