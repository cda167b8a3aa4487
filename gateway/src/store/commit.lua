-- One control-plane change, atomically: the record, the endpoint set, the
-- version counter and one event on the change stream. Gateways follow the
-- stream and expect each event's version to be exactly one more than the
-- last: that only holds because nothing else moves the counter.
--
-- KEYS: record, endpoint set, version counter, change stream
-- ARGV: op (create | put | delete), endpoint name, new JSON, expected
--       JSON (put: compare-and-set against what the caller read), maxlen
-- Answers the new version, or -1 not found, -2 changed meanwhile,
-- -3 already exists.
local op = ARGV[1]
if op == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return -3 end
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[2])
elseif op == 'put' then
  local current = redis.call('GET', KEYS[1])
  if not current then return -1 end
  if current ~= ARGV[4] then return -2 end
  redis.call('SET', KEYS[1], ARGV[3])
elseif op == 'delete' then
  if redis.call('DEL', KEYS[1]) == 0 then return -1 end
  redis.call('SREM', KEYS[2], ARGV[2])
else
  return redis.error_reply('unknown op ' .. op)
end
local v = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'endpoint', ARGV[2], 'version', v)
return v
