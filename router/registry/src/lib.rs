//! Worker registry in Redis. A worker writes its record with a short TTL and
//! refreshes it (heartbeat); a record that is not refreshed disappears, so a
//! dead worker drops out without anyone deregistering it.
//!
//! Keys: `sb:workers` (set of ids) and `sb:worker:{id}` (JSON, expiring).
//! Joining and leaving are also published on `sb:workers:changed`, so that
//! gateways re-read the registry at once instead of at their next poll: a
//! draining worker is out of rotation within a round trip, before it stops
//! accepting (see [`follow_changes`]).

use redis::AsyncCommands;
use redis_conn::Connection;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::warn;

const SET: &str = "sb:workers";
/// Pause between heartbeat attempts after one failed.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(250);
/// Pub/sub channel: a message (the worker id) on every join and leave.
pub const CHANGED: &str = "sb:workers:changed";

fn key(id: &str) -> String {
    format!("sb:worker:{id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedDeployment {
    pub endpoint: String,
    pub deployment: String,
    /// Rows the deployment can run at once (instances × max batch).
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    /// host:port of the worker's V2 gRPC service.
    pub address: String,
    pub deployments: Vec<ServedDeployment>,
    /// Whether the worker serves TLS. Absent in records from workers that
    /// predate it, which speak plaintext.
    #[serde(default)]
    pub tls: bool,
}

/// A live registration; `deregister` removes it, dropping it stops the
/// heartbeat and lets the record expire.
pub struct Registration {
    conn: Connection,
    id: String,
    heartbeat: JoinHandle<()>,
}

impl Registration {
    pub async fn register(
        mut conn: Connection,
        record: WorkerRecord,
        ttl: Duration,
    ) -> redis::RedisResult<Self> {
        let json = serde_json::to_string(&record).unwrap_or_default();
        write(&mut conn, &record.id, &json, ttl).await?;
        let _: i64 = conn.publish(CHANGED, &record.id).await?;
        let id = record.id.clone();
        let mut hb_conn = conn.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            loop {
                tick.tick().await;
                // After a failure, try again soon rather than at the next
                // tick: across a Redis failover the record would otherwise
                // expire before a heartbeat reaches the new primary.
                let mut failed = false;
                while let Err(e) = write(&mut hb_conn, &record.id, &json, ttl).await {
                    if !failed {
                        warn!(error = %e, "worker heartbeat failed; retrying");
                        failed = true;
                    }
                    tokio::time::sleep(HEARTBEAT_RETRY).await;
                }
            }
        });
        Ok(Registration {
            conn,
            id,
            heartbeat,
        })
    }

    pub async fn deregister(mut self) -> redis::RedisResult<()> {
        self.heartbeat.abort();
        let _: () = self.conn.del(key(&self.id)).await?;
        let _: () = self.conn.srem(SET, &self.id).await?;
        let _: i64 = self.conn.publish(CHANGED, &self.id).await?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn write(
    conn: &mut Connection,
    id: &str,
    json: &str,
    ttl: Duration,
) -> redis::RedisResult<()> {
    redis::pipe()
        .sadd(SET, id)
        .ignore()
        .set_ex(key(id), json, ttl.as_secs().max(1))
        .ignore()
        .query_async(conn)
        .await
}

/// Every worker whose record is alive; ids whose record expired are pruned.
pub async fn discover(conn: &mut Connection) -> redis::RedisResult<Vec<WorkerRecord>> {
    let ids: Vec<String> = conn.smembers(SET).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|i| key(i)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut out = Vec::new();
    for (id, v) in ids.iter().zip(values) {
        match v.and_then(|v| serde_json::from_str::<WorkerRecord>(&v).ok()) {
            Some(r) => out.push(r),
            None => {
                let _: redis::RedisResult<()> = conn.srem(SET, id).await;
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Wakes `changed` on every join or leave published by a worker, and once
/// on each (re)subscription, since messages sent while unsubscribed are
/// lost. Runs until dropped; reconnects with backoff while Redis is away
/// (the caller's poll still covers that time). Each subscription asks for
/// the node `redis_url` names now, so it follows a Sentinel failover.
pub async fn follow_changes(redis_url: String, changed: std::sync::Arc<tokio::sync::Notify>) {
    use futures::StreamExt;
    let mut wait = Duration::from_millis(100);
    loop {
        let sub = async {
            let client = redis_conn::current_client(&redis_url).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANGED).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), sub).await {
            Ok(Ok(pubsub)) => {
                wait = Duration::from_millis(100);
                changed.notify_one();
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    changed.notify_one();
                }
            }
            Ok(Err(e)) => warn!(error = %e, "cannot subscribe to registry changes; retrying"),
            Err(_) => warn!("subscribing to registry changes timed out; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerRecord;

    #[test]
    fn a_record_from_before_tls_reads_as_plaintext() {
        let old = r#"{"id":"w1","address":"10.0.0.5:9000","deployments":[]}"#;
        let r: WorkerRecord = serde_json::from_str(old).unwrap();
        assert!(!r.tls);
        let new = serde_json::to_string(&WorkerRecord { tls: true, ..r }).unwrap();
        assert!(serde_json::from_str::<WorkerRecord>(&new).unwrap().tls);
    }
}
