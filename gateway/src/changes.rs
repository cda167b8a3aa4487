//! Following the control plane's change stream. One task owns the
//! gateway's view: it loads everything once at start, then blocks on XREAD
//! for change events and re-reads only the records they name, so a change
//! costs a gateway the same at 100,000 endpoints as at 10 and reaches it as
//! soon as Redis hands the event on (no poll interval in the way).
//!
//! Every event carries the version its write gave the counter, and writes
//! move the counter by exactly one (store/commit.lua), so the follower
//! knows it missed something when an event is not exactly one more than the
//! last: the stream was trimmed past it, or Redis restarted or failed over
//! to a replica that had not seen every write. Then, and only then, it
//! loads everything again. When the stream is quiet for a while it compares
//! the counter too, which catches a Redis that came back with other data
//! and no events since.

use crate::routes::{apply_route, apply_routes};
use crate::store::{CHANGES, Loaded, Store, StoreError, VERSION};
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis_conn::Connection;
use router::Router;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long one XREAD blocks; after a quiet period this long the counter
/// is compared (see above). Not a delay on changes: an event ends the wait.
const QUIET: Duration = Duration::from_secs(5);
/// Events read at once; their records are read in one MGET.
const BATCH: usize = 512;
/// Pause after a Redis error before trying again.
const RETRY: Duration = Duration::from_millis(250);

pub struct Follower {
    store: Arc<Store>,
    router: Arc<Router>,
    /// A connection of its own: a blocking XREAD holds its connection.
    conn: Connection,
    stream_id: String,
}

/// What one round of following found.
enum Step {
    /// Nothing for a while, or events applied.
    Ok,
    /// Something was missed: load everything.
    Resync(&'static str),
}

impl Follower {
    /// Loads the control plane once (failing if Redis cannot be reached at
    /// start) and applies it to the store and the router.
    pub async fn start(
        redis_url: &str,
        store: Arc<Store>,
        router: Arc<Router>,
    ) -> Result<Follower, StoreError> {
        let conn = redis_conn::connect_with(
            redis_url,
            redis_conn::Options {
                response_timeout: QUIET + Duration::from_secs(3),
                ..Default::default()
            },
        )
        .await?;
        let mut f = Follower {
            store,
            router,
            conn,
            stream_id: String::new(),
        };
        f.resync().await?;
        Ok(f)
    }

    async fn resync(&mut self) -> Result<(), StoreError> {
        let Loaded {
            snapshot,
            stream_id,
        } = self.store.load_all().await?;
        debug!(
            endpoints = snapshot.endpoints.len(),
            version = snapshot.version,
            "control plane loaded"
        );
        apply_routes(&snapshot, &self.router);
        self.store.install(snapshot);
        self.stream_id = stream_id;
        Ok(())
    }

    /// Follows until the task is aborted. Errors keep the last view.
    pub async fn run(mut self) {
        let mut redis_ok = true;
        loop {
            let step = self.step().await;
            let step = match step {
                Ok(Step::Resync(why)) => {
                    info!(reason = why, "reloading the whole control plane");
                    self.resync().await.map(|()| Step::Ok)
                }
                other => other,
            };
            match step {
                Ok(_) if !redis_ok => {
                    info!("control plane reachable again");
                    redis_ok = true;
                }
                Ok(_) => {}
                Err(e) => {
                    if redis_ok {
                        warn!(error = %e, "control plane unreachable; serving from the last view");
                        redis_ok = false;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One blocking read of the stream, and what follows from it.
    async fn step(&mut self) -> Result<Step, StoreError> {
        let opts = StreamReadOptions::default()
            .block(QUIET.as_millis() as usize)
            .count(BATCH);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[CHANGES], &[&self.stream_id], &opts)
            .await?;
        let events: Vec<(String, String, i64)> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| {
                let name: String = e.get("endpoint").unwrap_or_default();
                let version: i64 = e.get("version").unwrap_or(-1);
                (e.id, name, version)
            })
            .collect();
        if events.is_empty() {
            let version: Option<i64> = self.conn.get(VERSION).await?;
            return Ok(if version.unwrap_or(0) == self.store.snapshot().version {
                Step::Ok
            } else {
                Step::Resync("version moved without an event")
            });
        }
        self.apply(events).await
    }

    /// Applies a run of events: checks they follow on from the view without
    /// a gap, re-reads the records they name, and installs the result.
    async fn apply(&mut self, events: Vec<(String, String, i64)>) -> Result<Step, StoreError> {
        let mut version = self.store.snapshot().version;
        let mut names: Vec<String> = Vec::with_capacity(events.len());
        for (_, name, v) in &events {
            if *v != version + 1 {
                return Ok(Step::Resync("missed change events"));
            }
            version = *v;
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let records = self.store.read(&names).await?;
        for (name, record) in names.iter().zip(records) {
            apply_route(&self.router, name, record.as_ref());
            self.store.modify(|s| s.set(name, record));
        }
        self.store.applied(version);
        if let Some((id, _, _)) = events.last() {
            self.stream_id = id.clone();
        }
        Ok(Step::Ok)
    }
}
