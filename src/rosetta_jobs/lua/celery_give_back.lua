-- Give the in-flight Celery messages of dead processes back to kombu (Celery ingress).
-- KEYS[1]: the owners zset (layout.Keys.celery_owners): members are JSON [in-flight list, kombu list], scored
-- by their process's last heartbeat (ms). ARGV[1]: now (ms); ARGV[2]: heartbeat timeout (ms); ARGV[3], when
-- given: give back that one member whatever its score (a process stopping gracefully gives back its own).
-- Each message goes to the consuming (right) end of its kombu list, newest first, so the oldest is next.
-- Returns how many messages were given back.
local members
if ARGV[3] then
  members = {ARGV[3]}
else
  members = redis.call("zrangebyscore", KEYS[1], 0, tonumber(ARGV[1]) - tonumber(ARGV[2]))
end
local given = 0
for _, member in ipairs(members) do
  local ok, pair = pcall(cjson.decode, member)
  if ok and type(pair) == "table" and type(pair[1]) == "string" and type(pair[2]) == "string" then
    while redis.call("lmove", pair[1], pair[2], "LEFT", "RIGHT") do
      given = given + 1
    end
  end
  redis.call("zrem", KEYS[1], member)
end
return given
