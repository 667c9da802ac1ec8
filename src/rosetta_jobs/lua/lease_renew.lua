-- Write or renew the leases of this process's running tasks, but never one another worker holds: a message
-- this process fetched before it was cut off may have been requeued and be running there.
-- KEYS: the tasks' leases. ARGV: this process's worker id, TTL (ms). Returns how many were written.
local written = 0
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if not holder or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    written = written + 1
  end
end
return written
