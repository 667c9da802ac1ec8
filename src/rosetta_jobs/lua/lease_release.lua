-- Remove a task's lease if this process holds it: a message skipped here may be running elsewhere, under
-- a lease of that worker's own.
-- KEYS: the task's lease. ARGV: this process's worker id. Returns 1 if it was removed.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
