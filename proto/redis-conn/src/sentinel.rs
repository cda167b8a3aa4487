//! `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]`
//! (`rediss+sentinel://` for TLS to the sentinels and the data nodes): the
//! master's address is asked of the sentinels, not fixed.
//!
//! redis' `ConnectionManager` reconnects to the address it was built with,
//! and its sentinel support hands out a `Client` per call, so neither
//! follows a failover by itself. [`crate::Connection`] keeps one
//! `ConnectionManager` and, when a command fails the way a lost primary
//! fails (I/O, refused, timeout, `READONLY` from a demoted one), asks the
//! sentinels again and swaps in a manager for the new master.

use redis::{ErrorKind, RedisError, RedisResult};
use std::time::Duration;

/// How long one sentinel or candidate master may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct SentinelUrl {
    /// `redis` or `rediss`, for the sentinels and the data nodes alike.
    pub scheme: &'static str,
    /// `user:password@` or empty: credentials for the data nodes.
    pub userinfo: String,
    pub sentinels: Vec<String>,
    pub master: String,
    pub db: i64,
}

fn invalid(what: &str) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "bad redis+sentinel:// URL",
        what.to_string(),
    ))
}

/// `Some` for a sentinel URL (parsed), `None` for any other.
pub fn parse(url: &str) -> Option<RedisResult<SentinelUrl>> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        ("redis", r)
    } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        ("rediss", r)
    } else {
        return None;
    };
    Some(parse_rest(scheme, rest))
}

fn parse_rest(scheme: &'static str, rest: &str) -> RedisResult<SentinelUrl> {
    // The password may hold '/' or ',', so credentials end at the last '@'.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (format!("{}@", &rest[..at]), &rest[at + 1..]),
        None => (String::new(), rest),
    };
    let mut parts = rest.split('/');
    let hosts = parts.next().unwrap_or_default();
    let master = parts.next().unwrap_or_default().to_string();
    let db = match parts.next() {
        None | Some("") => 0,
        Some(d) => d
            .parse()
            .map_err(|_| invalid("the database is not a number"))?,
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.contains(':') {
                h.to_string()
            } else {
                format!("{h}:26379")
            }
        })
        .collect();
    if sentinels.is_empty() {
        return Err(invalid("no sentinel host:port"));
    }
    if master.is_empty() {
        return Err(invalid("no master name after the hosts (…/MASTER)"));
    }
    Ok(SentinelUrl {
        scheme,
        userinfo,
        sentinels,
        master,
        db,
    })
}

impl SentinelUrl {
    /// The data-node URL for `host:port` (with the credentials).
    pub fn node_url(&self, addr: &str) -> String {
        format!("{}://{}{addr}/{}", self.scheme, self.userinfo, self.db)
    }

    /// Asks each sentinel in turn for the master's address and returns the
    /// first that answers as a master itself (a sentinel may lag behind a
    /// promotion; the node's own `ROLE` does not).
    pub async fn resolve(&self) -> RedisResult<String> {
        let mut last = invalid("no sentinel answered");
        for s in &self.sentinels {
            match tokio::time::timeout(ASK_TIMEOUT * 3, self.ask(s)).await {
                Ok(Ok(addr)) => return Ok(addr),
                Ok(Err(e)) => last = e,
                Err(_) => last = RedisError::from((ErrorKind::Io, "sentinel timed out")),
            }
        }
        Err(last)
    }

    async fn ask(&self, sentinel: &str) -> RedisResult<String> {
        // Through crate::client so rediss+sentinel:// trusts --redis-ca-cert.
        let client = crate::client(&format!("{}://{sentinel}", self.scheme))?;
        let mut c = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(ASK_TIMEOUT))
                    .set_response_timeout(Some(ASK_TIMEOUT)),
            )
            .await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut c)
            .await?;
        let Some((host, port)) = addr else {
            return Err(invalid("the sentinel does not know this master name"));
        };
        let addr = format!("{host}:{port}");
        let node = crate::client(&self.node_url(&addr))?;
        let mut n = node
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(ASK_TIMEOUT))
                    .set_response_timeout(Some(ASK_TIMEOUT)),
            )
            .await?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut n).await?;
        match role.first() {
            Some(redis::Value::BulkString(b)) if b == b"master" => Ok(addr),
            _ => Err(RedisError::from((
                ErrorKind::Io,
                "the address the sentinel gave is not a master yet",
            ))),
        }
    }
}

/// Errors after which the master may have moved.
pub fn master_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_master_db_and_credentials() {
        let u = parse("redis+sentinel://:p/w,@a:1,b:2/mymaster/3")
            .unwrap()
            .unwrap();
        assert_eq!(u.sentinels, vec!["a:1", "b:2"]);
        assert_eq!(u.master, "mymaster");
        assert_eq!(u.db, 3);
        assert_eq!(u.node_url("h:9"), "redis://:p/w,@h:9/3");
        let u = parse("rediss+sentinel://s/m").unwrap().unwrap();
        assert_eq!(u.sentinels, vec!["s:26379"]);
        assert_eq!(u.scheme, "rediss");
        assert!(parse("redis://h:1").is_none());
        assert!(parse("redis+sentinel://a:1").unwrap().is_err());
        assert_eq!(
            crate::redacted("redis+sentinel://u:sec/ret@a:1,b:2/m"),
            "redis+sentinel://***@a:1,b:2/m"
        );
        assert_eq!(
            crate::redacted("redis+sentinel://a:1/m"),
            "redis+sentinel://a:1/m"
        );
    }
}
