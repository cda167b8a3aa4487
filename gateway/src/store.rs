//! Control-plane state in Redis: endpoints with their deployments, traffic,
//! mirror and key hashes. Every gateway keeps a snapshot and reloads it when
//! the version counter moves, so a restarted or second gateway sees the same
//! state, and a gateway keeps serving from its snapshot while Redis is away.
//!
//! Keys: `sb:endpoints` (set), `sb:endpoint:{name}` (JSON),
//! `sb:cp:version` (counter), `sb:token-secret`.

use crate::secrets;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use thiserror::Error;
use tracing::warn;

const ENDPOINTS: &str = "sb:endpoints";
const VERSION: &str = "sb:cp:version";
const TOKEN_SECRET: &str = "sb:token-secret";

fn key(name: &str) -> String {
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
    pub deployments: BTreeMap<String, DeploymentRecord>,
    #[serde(default)]
    pub traffic: BTreeMap<String, u32>,
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

/// An immutable view of the control plane.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: i64,
    pub endpoints: HashMap<String, EndpointRecord>,
    /// key hash -> (endpoint, slot)
    pub keys: HashMap<String, (String, usize)>,
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
        let mut keys = HashMap::new();
        for e in &endpoints {
            for (slot, k) in e.keys.iter().enumerate() {
                keys.insert(k.hash.clone(), (e.name.clone(), slot));
            }
        }
        let endpoints = endpoints.into_iter().map(|e| (e.name.clone(), e)).collect();
        Snapshot {
            version,
            endpoints,
            keys,
            token_secret,
        }
    }
}

pub struct Store {
    conn: ConnectionManager,
    /// Transactions get a connection of their own (see `update`).
    client: redis::Client,
    snapshot: RwLock<Arc<Snapshot>>,
    /// One update at a time per gateway: concurrent ones on the same record
    /// would only conflict and retry.
    updating: tokio::sync::Mutex<()>,
}

impl Store {
    /// Loads the state once; fails if Redis cannot be reached at start.
    pub async fn open(client: redis::Client, conn: ConnectionManager) -> Result<Self, StoreError> {
        let store = Store {
            conn,
            client,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            updating: Default::default(),
        };
        store.reload().await?;
        Ok(store)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reloads when another writer moved the version. Returns whether the
    /// snapshot changed. On a Redis error the old snapshot stays.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let v: Option<i64> = conn.get(VERSION).await?;
        if v.unwrap_or(0) == self.snapshot().version && !self.snapshot().token_secret.is_empty() {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        // The secret that signs tokens is made once, by whichever gateway
        // comes first.
        let _: bool = conn.set_nx(TOKEN_SECRET, secrets::new_secret()).await?;
        let (version, names, secret): (Option<i64>, Vec<String>, String) = redis::pipe()
            .get(VERSION)
            .smembers(ENDPOINTS)
            .get(TOKEN_SECRET)
            .query_async(&mut conn)
            .await?;
        let mut endpoints = Vec::with_capacity(names.len());
        if !names.is_empty() {
            let keys: Vec<String> = names.iter().map(|n| key(n)).collect();
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            for (name, v) in names.iter().zip(values) {
                match v.map(|v| serde_json::from_str::<EndpointRecord>(&v)) {
                    Some(Ok(e)) => endpoints.push(e),
                    Some(Err(e)) => {
                        warn!(endpoint = %name, error = %e, "unreadable endpoint record skipped")
                    }
                    None => {}
                }
            }
        }
        let snap = Snapshot::build(version.unwrap_or(0), endpoints, secret.into_bytes());
        // Reloads race (background refresh, writes); never go back to an
        // older version.
        if let Ok(mut s) = self.snapshot.write()
            && snap.version >= s.version
        {
            *s = Arc::new(snap);
        }
        Ok(())
    }

    pub async fn create(&self, record: EndpointRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let json =
            serde_json::to_string(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let created: bool = conn.set_nx(key(&record.name), json).await?;
        if !created {
            return Err(StoreError::Exists(record.name));
        }
        let _: () = redis::pipe()
            .sadd(ENDPOINTS, &record.name)
            .ignore()
            .incr(VERSION, 1)
            .ignore()
            .query_async(&mut conn)
            .await?;
        self.reload().await
    }

    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let (removed,): (i64,) = redis::pipe()
            .del(key(name))
            .srem(ENDPOINTS, name)
            .ignore()
            .incr(VERSION, 1)
            .ignore()
            .query_async(&mut conn)
            .await?;
        if removed == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        self.reload().await
    }

    /// Read-modify-write of one endpoint under WATCH, so two gateways
    /// changing it at once do not lose either change.
    pub async fn update<T>(
        &self,
        name: &str,
        f: impl Fn(&mut EndpointRecord) -> Result<T, StoreError>,
    ) -> Result<(EndpointRecord, T), StoreError> {
        let _one_at_a_time = self.updating.lock().await;
        // WATCH holds for one connection: the shared manager may reconnect
        // under us (another task's error), silently dropping the WATCH, so
        // the transaction runs on a connection of its own.
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        for _ in 0..8 {
            let _: () = redis::cmd("WATCH")
                .arg(key(name))
                .query_async(&mut conn)
                .await?;
            let current: Option<String> = conn.get(key(name)).await?;
            let Some(mut record) =
                current.and_then(|j| serde_json::from_str::<EndpointRecord>(&j).ok())
            else {
                let _: () = redis::cmd("UNWATCH").query_async(&mut conn).await?;
                return Err(StoreError::NotFound(name.to_string()));
            };
            let out = match f(&mut record) {
                Ok(out) => out,
                Err(e) => {
                    let _: () = redis::cmd("UNWATCH").query_async(&mut conn).await?;
                    return Err(e);
                }
            };
            let json =
                serde_json::to_string(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
            // EXEC answers nil when the watched key changed meanwhile.
            let done: Option<(String, i64)> = redis::pipe()
                .atomic()
                .set(key(name), json)
                .incr(VERSION, 1)
                .query_async(&mut conn)
                .await?;
            if done.is_some() {
                self.reload().await?;
                return Ok((record, out));
            }
        }
        Err(StoreError::Conflict)
    }
}
