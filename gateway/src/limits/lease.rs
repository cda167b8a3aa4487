//! The fleet-wide budget in Redis: one counter per credential per second,
//! which gateways draw on in chunks. A gateway asks Redis once a chunk, not
//! once a request, and the chunks granted in a second never add up to more
//! than the limit, however many gateways share it.

use redis_conn::Connection;
use std::time::Duration;

/// Grants up to ARGV[2] of the ARGV[1] allowed in the current second, by
/// Redis' own clock (so gateways whose clocks disagree still share one
/// window). Answers {granted, milliseconds left in the window}. The counter
/// outlives its second briefly and then expires: nothing to clean up.
const GRANT: &str = r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1] .. ':' .. math.floor(ms / 1000)
local used = tonumber(redis.call('GET', key) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant > 0 then
  redis.call('INCRBY', key, grant)
  redis.call('PEXPIRE', key, 2000)
else
  grant = 0
end
return {grant, 1000 - ms % 1000}
";

/// What one draw on the budget gave.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// Requests this gateway may admit until `valid_for` has passed.
    pub granted: u32,
    pub valid_for: Duration,
}

#[derive(Clone)]
pub struct Budget {
    conn: Connection,
    script: redis::Script,
    per_second: u32,
    chunk: u32,
}

impl Budget {
    pub fn new(conn: Connection, per_second: u32) -> Self {
        Budget {
            conn,
            script: redis::Script::new(GRANT),
            per_second,
            chunk: chunk_for(per_second),
        }
    }

    /// Draws one chunk for the credential `key` (already a hash, never the
    /// secret itself).
    pub async fn draw(&self, key: &str) -> redis::RedisResult<Grant> {
        let mut conn = self.conn.clone();
        let (granted, left_ms): (i64, i64) = self
            .script
            .key(format!("sb:ratelimit:{key}"))
            .arg(self.per_second)
            .arg(self.chunk)
            .invoke_async(&mut conn)
            .await?;
        Ok(Grant {
            granted: u32::try_from(granted).unwrap_or(0),
            valid_for: Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)),
        })
    }
}

/// A twentieth of the limit: a round trip per twenty requests at most, and
/// what a gateway may hold unused when the second ends (the budget it
/// cannot hand to another gateway) stays a small share of the limit.
fn chunk_for(per_second: u32) -> u32 {
    (per_second / 20).max(1)
}

#[cfg(test)]
mod tests {
    use super::chunk_for;

    #[test]
    fn chunks_are_a_twentieth_and_never_empty() {
        assert_eq!(chunk_for(200), 10);
        assert_eq!(chunk_for(5), 1);
        assert_eq!(chunk_for(1), 1);
    }
}
