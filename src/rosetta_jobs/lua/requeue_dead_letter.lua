-- Move one dead letter back to its queue, only if it is still dead-lettered (no double requeue).
-- KEYS: dead set, dead payloads, queue payloads, queue. ARGV: redis message id, new payload.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[4], ARGV[1])
return 1
