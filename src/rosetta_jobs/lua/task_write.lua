-- Store a task's meta and publish it, unless a final state is already stored. A final state is also
-- recorded in the task history in the same step, so that the history holds exactly the tasks that ended.
-- KEYS: meta, history (zset: task id by finish time, ms), history entries (hash: task id -> entry JSON).
-- ARGV: meta JSON, TTL (s), task id, history entry JSON ('' for a state that is not final),
--       now (ms), most entries kept, oldest entry kept (s).
-- Returns 1 if written, 0 if a final state was kept.
if final_status(KEYS[1]) then return 0 end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
local most, age = tonumber(ARGV[6]), tonumber(ARGV[7])
if ARGV[4] == '' or most <= 0 or age <= 0 then return 1 end
local now = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
-- Trim what is too old, then what is too many; at most 1000 per write (a lowered retention shrinks over writes).
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - age * 1000), 'LIMIT', 0, 1000)
local excess = redis.call('ZCARD', KEYS[2]) - #gone - most
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], #gone, #gone + math.min(excess, 1000) - 1)
  for _, id in ipairs(oldest) do gone[#gone + 1] = id end
end
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[3], unpack(gone))
end
redis.call('PEXPIRE', KEYS[2], age * 1000)
redis.call('PEXPIRE', KEYS[3], age * 1000)
return 1
