-- Write STARTED and count one more start, unless the task is final or a cancel stands.
-- KEYS: meta, deliveries, cancel flag[, the job's lease]. ARGV: STARTED meta JSON, meta TTL (s), deliveries TTL (s)
--       [, lease owner, lease TTL (ms)].
-- Returns the final state found (the job must not run), 'REVOKED' for a standing cancel, or the start count.
local final = final_status(KEYS[1])
if final then return final end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'REVOKED' end
local starts = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5]) end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return starts
