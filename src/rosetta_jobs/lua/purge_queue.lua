-- Take up to ARGV[1] waiting messages off a queue, ready ones first, then delayed ones no worker has
-- fetched yet: their ids leave the list and their payloads the hash in one step, so a worker either
-- fetched a message before (it runs) or never sees it. Fetched messages are not touched.
-- KEYS: ready list, ready payloads, delayed list, delayed payloads. Returns the payloads taken.
local taken, left = {}, tonumber(ARGV[1])
for i = 1, 3, 2 do
  if left <= 0 then break end
  local ids = redis.call('LRANGE', KEYS[i], 0, left - 1)
  if #ids > 0 then
    redis.call('LTRIM', KEYS[i], #ids, -1)
    local payloads = redis.call('HMGET', KEYS[i + 1], unpack(ids))
    redis.call('HDEL', KEYS[i + 1], unpack(ids))
    for _, payload in ipairs(payloads) do
      if payload then taken[#taken + 1] = payload end
    end
    left = left - #ids
  end
end
return taken
