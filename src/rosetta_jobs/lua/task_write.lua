-- Store a task's meta and publish it, unless a final state is already stored.
-- KEYS: meta. ARGV: meta JSON, TTL (s). Returns 1 if written, 0 if a final state was kept.
if final_status(KEYS[1]) then return 0 end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
