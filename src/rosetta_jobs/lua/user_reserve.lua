-- Decide which of a user's tasks are still active, forget the others, and reserve a slot for a new one.
-- KEYS: the user's set, its location hash. ARGV: task id ('' to only count), limit, now ms, grace ms,
-- keep ms, meta prefix, lease prefix, then the ids of the members whose message is still in the broker.
-- Returns {reserved (0/1), active count}.
local present = {}
for i = 8, #ARGV do present[ARGV[i]] = true end
local now = tonumber(ARGV[3])
local active = 0
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local id, score = members[i], tonumber(members[i + 1])
  local raw = redis.call('GET', ARGV[6] .. id)
  local status = nil
  if raw then
    local ok, doc = pcall(cjson.decode, raw)
    if ok and type(doc) == 'table' then status = doc['status'] end
  end
  local forget = false
  if status and FINAL_STATES[status] then
    forget = true
  elseif status == 'STARTED' or status == 'PROGRESS' then
    if redis.call('EXISTS', ARGV[7] .. id) == 1 then active = active + 1 end
  elseif status ~= nil then
    active = active + 1
  elseif present[id] or now - score < tonumber(ARGV[4]) then
    active = active + 1
  else
    forget = true
  end
  if forget then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  end
end
if ARGV[1] == '' then return {1, active} end
if active >= tonumber(ARGV[2]) then return {0, active} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, active + 1}
