-- Take, renew or give back one SSE stream slot of a user: a sorted set of stream ids scored by lease expiry.
-- Slots are leases, not counters: a service that dies without giving its slots back loses them when they expire.
-- KEYS: the user's stream set. ARGV: op ('take', 'renew', 'give'), stream id, limit, now ms, lease ms.
-- Returns {granted (0/1), open streams}.
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'give' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {1, redis.call('ZCARD', KEYS[1])}
end
local expires = now + tonumber(ARGV[5])
if ARGV[1] == 'renew' then
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[2])
else
  local open = redis.call('ZCARD', KEYS[1])
  if open >= tonumber(ARGV[3]) then return {0, open} end
  redis.call('ZADD', KEYS[1], expires, ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, redis.call('ZCARD', KEYS[1])}
