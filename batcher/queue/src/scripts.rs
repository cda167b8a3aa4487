//! State changes that read and write together run as Lua scripts, so that a
//! batcher dying between two commands cannot leave a job half-changed (Redis
//! runs a script as one step, and AOF records its effects as one).

use redis::Script;
use std::sync::LazyLock;

/// KEYS: the output's claim. ARGV: job id. Claims an output folder for a
/// job unless a job that has not ended holds it (answers that job's id):
/// two live jobs writing one folder would overwrite each other's parts. A
/// holder that ended, or whose record is gone, no longer counts.
pub static CLAIM_OUTPUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local s = redis.call('HGET', 'sb:job:' .. holder, 'state')
  if s and s ~= 'succeeded' and s ~= 'partially_succeeded' and s ~= 'failed' and s ~= 'cancelled' then
    return holder
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return ''
",
    )
});

/// KEYS: job. ARGV: now. Queued jobs end at once (nothing was written);
/// running ones are flagged and end when every shard is accounted for.
pub static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return false end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel_requested', '1', 'finished_ms', ARGV[1])
  return 'cancelled'
elseif s == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'cancelling', 'cancel_requested', '1')
  return 'cancelling'
end
return s
",
    )
});

/// KEYS: job, the shard stream of its priority, the plan entry's stream.
/// ARGV: group, entry id, now, rows_total, shards_total, job id, then
/// (shard index, piece JSON) pairs. Only a queued job is planned, so a plan
/// entry delivered twice adds its shards once.
pub static PLAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_ms', ARGV[3],
    'rows_total', ARGV[4], 'shards_total', ARGV[5])
  for i = 7, #ARGV, 2 do
    redis.call('XADD', KEYS[2], '*', 'kind', 'shard', 'job', ARGV[6], 'shard', ARGV[i], 'piece', ARGV[i + 1])
  end
  if tonumber(ARGV[5]) == 0 and redis.call('HSETNX', KEYS[1], 'finalize_queued', '1') == 1 then
    redis.call('XADD', KEYS[2], '*', 'kind', 'finalize', 'job', ARGV[6])
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return s
",
    )
});

/// KEYS: job, its done-set, the entry's stream. ARGV: group, entry id,
/// shard index, rows done, rows failed, job id, batcher id. The done-set makes counting
/// idempotent: a shard run twice (its first batcher died after writing)
/// counts once. The last shard queues the finalize step exactly once.
pub static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local counted = redis.call('SADD', KEYS[2], ARGV[3])
if counted == 1 then
  redis.call('HSET', KEYS[1], 'part:' .. ARGV[3], ARGV[4] .. ',' .. ARGV[5] .. ',' .. ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'rows_done', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'rows_failed', ARGV[5])
  local done = redis.call('HINCRBY', KEYS[1], 'shards_done', 1)
  local total = tonumber(redis.call('HGET', KEYS[1], 'shards_total') or '0')
  if done >= total and redis.call('HSETNX', KEYS[1], 'finalize_queued', '1') == 1 then
    redis.call('XADD', KEYS[3], '*', 'kind', 'finalize', 'job', ARGV[6])
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return counted
",
    )
});

/// KEYS: job, the entry's stream. ARGV: group, entry id, reason, then the
/// new entry's field/value pairs. Queues the entry again only if this
/// delivery was still pending: a retry whose reply was lost and that is
/// sent again acknowledges nothing the second time, so it adds no copy.
pub static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_error', ARGV[3])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
",
    )
});

/// KEYS: job, the entry's stream. ARGV: group, entry id, state, message,
/// manifest, errors, now, and the state the job must be in ('' = any that is
/// not final). A final state is never overwritten.
pub static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s = redis.call('HGET', KEYS[1], 'state')
if s and (ARGV[8] == '' or s == ARGV[8])
  and s ~= 'succeeded' and s ~= 'partially_succeeded' and s ~= 'failed' and s ~= 'cancelled' then
  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'message', ARGV[4], 'manifest', ARGV[5],
    'errors', ARGV[6], 'finished_ms', ARGV[7])
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return 1
",
    )
});

/// KEYS: job, the entry's stream. ARGV: group, entry id, consumer, shard
/// index ('' for a step that is not a shard), idle ms. A draining batcher
/// hands an entry back: still pending, still its own, but idle as if its
/// batcher had gone silent long ago, so the next batcher's reclaim takes it
/// at once instead of after the visibility timeout. The attempt it counted
/// is given back too: being stopped is not failing. An entry another
/// batcher has taken meanwhile is left alone.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[5], 'JUSTID')
if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[1], 'attempts:' .. ARGV[4], -1) end
return 1
",
    )
});
