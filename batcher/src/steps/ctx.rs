//! What every step works with, and how it talks to the queue.

use crate::config::BatcherConfig;
use crate::io::Stores;
use crate::model::Models;
use job_queue::{JobQueue, QueueError};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::warn;

pub(crate) struct Ctx {
    pub config: BatcherConfig,
    pub stores: Stores,
    pub queue: JobQueue,
    pub models: Arc<Mutex<Models>>,
    /// Turns true when the batcher starts to drain: a running shard stops
    /// and is handed back.
    pub drain: tokio::sync::watch::Sender<bool>,
}

impl Ctx {
    pub fn draining(&self) -> bool {
        *self.drain.borrow()
    }
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
