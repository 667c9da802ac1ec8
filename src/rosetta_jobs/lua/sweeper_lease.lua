-- The sweeper's lease: one live process of the fleet sweeps at a time.
-- KEYS: the lease key. ARGV: op ('hold' to take or renew, 'drop' to give back), holder id, lease ms.
-- Returns 1 when the caller holds the lease after the call (for 'drop': 1 when it gave it back).
local current = redis.call('GET', KEYS[1])
if ARGV[1] == 'drop' then
  if current == ARGV[2] then redis.call('DEL', KEYS[1]) return 1 end
  return 0
end
if current == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
