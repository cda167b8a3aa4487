//! Control-plane state in Redis: endpoints with their deployments, traffic,
//! mirror and key hashes. Every write changes one record, moves the version
//! counter and appends one event (endpoint, version) to the change stream,
//! all in one script; every gateway keeps a snapshot and follows the stream
//! (`changes.rs`), re-reading only the records that changed. A gateway keeps
//! serving from its snapshot while Redis is away.
//!
//! Keys: `sb:endpoints` (set), `sb:endpoint:{name}` (JSON),
//! `sb:cp:version` (counter), `sb:cp:changes` (stream), `sb:token-secret`.

use crate::secrets;
use litemap::LiteMap;
use redis::AsyncCommands;
use redis_conn::Connection;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tracing::warn;

pub const ENDPOINTS: &str = "sb:endpoints";
pub const VERSION: &str = "sb:cp:version";
pub const CHANGES: &str = "sb:cp:changes";
const TOKEN_SECRET: &str = "sb:token-secret";

/// Events kept on the change stream (approximately; trimming is lazy). A
/// gateway that falls further behind than this reloads everything.
const CHANGES_KEPT: usize = 10_000;
/// Records read per MGET in a full load, so one reply stays small and Redis
/// serves others in between.
const LOAD_CHUNK: usize = 1000;
/// How long a write waits for this gateway's follower to apply it, so that
/// the writer reads its own write; past it the answer goes out anyway (the
/// change is committed and the follower will get there).
const READ_YOUR_WRITE: Duration = Duration::from_secs(2);

pub fn key(name: &str) -> String {
    format!("sb:endpoint:{name}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Key,
    Token,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeploymentRecord {
    pub model_uri: String,
    pub instances: u32,
    pub max_batch_size: u32,
    pub max_queue_delay_us: u64,
    pub max_queue_size: u32,
    pub preferred_batch_sizes: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub hash: String,
    pub created_unix: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub deployment: String,
    pub percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub name: String,
    pub auth_mode: AuthMode,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    /// Sorted vectors rather than B-trees: an endpoint has a handful of
    /// deployments, and a B-tree's first node is sized for eleven (~1 KiB
    /// here), which at 100,000 endpoints in every gateway adds up.
    pub deployments: LiteMap<String, DeploymentRecord>,
    #[serde(default)]
    pub traffic: LiteMap<String, u32>,
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// Primary and secondary key hashes.
    pub keys: [KeyRecord; 2],
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("control plane unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("endpoint '{0}' not found")]
    NotFound(String),
    #[error("endpoint '{0}' already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("concurrent updates kept conflicting; try again")]
    Conflict,
}

/// An immutable view of the control plane. The maps are persistent (imbl):
/// a view with one endpoint changed shares everything else with the old
/// one, so a change costs O(log N) and readers holding the old view are
/// undisturbed.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// The last change applied: every change up to it is in this view.
    pub version: i64,
    /// Ordered, so that listing pages by name.
    pub endpoints: imbl::OrdMap<String, Arc<EndpointRecord>>,
    /// key hash -> (endpoint, slot)
    pub keys: imbl::HashMap<String, (String, usize)>,
    pub token_secret: Vec<u8>,
}

impl Snapshot {
    /// Also how the credential checks' tests make a control plane without
    /// Redis.
    pub(crate) fn build(
        version: i64,
        endpoints: Vec<EndpointRecord>,
        token_secret: Vec<u8>,
    ) -> Self {
        let mut snap = Snapshot {
            version,
            token_secret,
            ..Default::default()
        };
        for e in endpoints {
            snap.set(&e.name.clone(), Some(e));
        }
        snap
    }

    /// Replaces (Some) or removes (None) one endpoint and its keys.
    pub(crate) fn set(&mut self, name: &str, record: Option<EndpointRecord>) {
        if let Some(old) = self.endpoints.remove(name) {
            for k in &old.keys {
                if self.keys.get(&k.hash).is_some_and(|(e, _)| e == name) {
                    self.keys.remove(&k.hash);
                }
            }
        }
        if let Some(e) = record {
            for (slot, k) in e.keys.iter().enumerate() {
                self.keys.insert(k.hash.clone(), (e.name.clone(), slot));
            }
            self.endpoints.insert(name.to_string(), Arc::new(e));
        }
    }
}

/// Where a full load left the change stream: follow it from here.
pub(crate) struct Loaded {
    pub snapshot: Snapshot,
    pub stream_id: String,
}

pub struct Store {
    conn: Connection,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The version the follower has applied; writers wait on it.
    applied: watch::Sender<i64>,
    commit: redis::Script,
}

fn parse(name: &str, json: Option<String>) -> Option<EndpointRecord> {
    match json.map(|v| serde_json::from_str::<EndpointRecord>(&v)) {
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            warn!(endpoint = %name, error = %e, "unreadable endpoint record skipped");
            None
        }
        None => None,
    }
}

impl Store {
    /// An empty store; the follower (`changes::Follower::start`) loads it.
    pub fn new(conn: Connection) -> Self {
        Store {
            conn,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            applied: watch::channel(0).0,
            commit: redis::Script::new(include_str!("store/commit.lua")),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Puts a new view in place. Only the follower calls it, so views are
    /// installed in order.
    pub(crate) fn install(&self, snap: Snapshot) {
        let version = snap.version;
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(snap);
        }
        self.applied.send_replace(version);
    }

    /// Changes the view in place when no request holds it (the usual case:
    /// requests hold it for microseconds), else a copy of it (persistent
    /// maps: O(log N) either way, but in place nothing is copied). Readers
    /// see the view before or after `f`, never between. Only the follower
    /// calls it; `f` should be one endpoint's change, as readers wait on it.
    pub(crate) fn modify(&self, f: impl FnOnce(&mut Snapshot)) {
        if let Ok(mut s) = self.snapshot.write() {
            f(Arc::make_mut(&mut s));
        }
    }

    /// Marks every change up to `version` as applied: writers waiting on
    /// it go on, and later views report it.
    pub(crate) fn applied(&self, version: i64) {
        self.modify(|s| s.version = version);
        self.applied.send_replace(version);
    }

    /// Everything, with the stream position that matches it: the position,
    /// the version and the names are read in one transaction, so the first
    /// event after the position is exactly version + 1.
    pub(crate) async fn load_all(&self) -> Result<Loaded, StoreError> {
        let mut conn = self.conn.clone();
        // The secret that signs tokens is made once, by whichever gateway
        // comes first.
        let _: bool = conn.set_nx(TOKEN_SECRET, secrets::new_secret()).await?;
        let (last, version, names, secret): (
            redis::streams::StreamRangeReply,
            Option<i64>,
            Vec<String>,
            Option<String>,
        ) = redis::pipe()
            .atomic()
            .cmd("XREVRANGE")
            .arg(CHANGES)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .get(VERSION)
            .smembers(ENDPOINTS)
            .get(TOKEN_SECRET)
            .query_async(&mut conn)
            .await?;
        let mut endpoints = Vec::with_capacity(names.len());
        for chunk in names.chunks(LOAD_CHUNK) {
            endpoints.extend(self.read(chunk).await?.into_iter().flatten());
        }
        let stream_id = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_string(), |e| e.id.clone());
        Ok(Loaded {
            snapshot: Snapshot::build(
                version.unwrap_or(0),
                endpoints,
                secret.unwrap_or_default().into_bytes(),
            ),
            stream_id,
        })
    }

    /// The current records of `names` (None where deleted), in one round trip.
    pub(crate) async fn read(
        &self,
        names: &[String],
    ) -> Result<Vec<Option<EndpointRecord>>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let keys: Vec<String> = names.iter().map(|n| key(n)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(names.iter().zip(values).map(|(n, v)| parse(n, v)).collect())
    }

    /// Runs the commit script; answers the new version or the script's
    /// refusal (-1 not found, -2 changed meanwhile, -3 exists).
    async fn commit(
        &self,
        op: &str,
        name: &str,
        json: &str,
        expected: &str,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(self
            .commit
            .key(key(name))
            .key(ENDPOINTS)
            .key(VERSION)
            .key(CHANGES)
            .arg(op)
            .arg(name)
            .arg(json)
            .arg(expected)
            .arg(CHANGES_KEPT)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Waits until this gateway's follower has applied `version`, so that
    /// the writer's next read sees its write. Bounded: see READ_YOUR_WRITE.
    async fn seen(&self, version: i64) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(READ_YOUR_WRITE, rx.wait_for(|v| *v >= version)).await;
    }

    pub async fn create(&self, record: EndpointRecord) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        match self.commit("create", &record.name, &json, "").await? {
            -3 => Err(StoreError::Exists(record.name)),
            v => {
                self.seen(v).await;
                Ok(())
            }
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.commit("delete", name, "", "").await? {
            -1 => Err(StoreError::NotFound(name.to_string())),
            v => {
                self.seen(v).await;
                Ok(())
            }
        }
    }

    /// Read-modify-write of one endpoint: the script writes only if the
    /// record is still what was read (compare-and-set), so two gateways
    /// changing it at once do not lose either change.
    pub async fn update<T>(
        &self,
        name: &str,
        f: impl Fn(&mut EndpointRecord) -> Result<T, StoreError>,
    ) -> Result<(EndpointRecord, T), StoreError> {
        let mut conn = self.conn.clone();
        for _ in 0..8 {
            let current: Option<String> = conn.get(key(name)).await?;
            let Some(current) = current else {
                return Err(StoreError::NotFound(name.to_string()));
            };
            let mut record = serde_json::from_str::<EndpointRecord>(&current)
                .map_err(|_| StoreError::NotFound(name.to_string()))?;
            let out = f(&mut record)?;
            let json =
                serde_json::to_string(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
            match self.commit("put", name, &json, &current).await? {
                -1 => return Err(StoreError::NotFound(name.to_string())),
                -2 => continue,
                v => {
                    self.seen(v).await;
                    return Ok((record, out));
                }
            }
        }
        Err(StoreError::Conflict)
    }
}

#[cfg(test)]
mod tests;
