-- Hand Celery messages over from one process's in-flight list, each at most once (Celery ingress).
-- KEYS[1]: the in-flight list. ARGV[1]: now (ms); ARGV[2]: seconds a handed-over task id is remembered;
-- ARGV[3]: wake-up tokens kept per queue; then 8 values per message:
--   raw (the element as taken), action, marker, list, hash, id, payload, wake
-- where action is one of
--   enqueue  HSET hash id payload; RPUSH list id; a wake-up token on wake (Dramatiq's enqueue)
--   delay    HSET hash id payload; RPUSH list id (Dramatiq's delayed queue, promoted by its own consumer)
--   dead     HSET hash id payload; ZADD list now id (Dramatiq's dead-letter queue)
--   forward  LPUSH list payload (another kombu list, for a Celery worker that still runs)
--   drop     nothing (e.g. expired: its REVOKED state was written before)
-- A message counts only if its raw copy is still in the in-flight list and is removed here, in the same
-- step: a replay of the same batch, or a batch whose list was given back to kombu meanwhile, changes
-- nothing. marker (when not empty) is SET NX: a second copy of a task id already handed over is dropped.
-- Returns one code per message: 1 handed over, 0 not in the in-flight list any more, 2 duplicate task id.
local now = tonumber(ARGV[1])
local codes = {}
for i = 4, #ARGV, 8 do
  local raw, action, marker, list, hash, id, payload, wake =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local code = 0
  if redis.call("lrem", KEYS[1], 1, raw) == 1 then
    code = 1
    if marker ~= "" and not redis.call("set", marker, "1", "NX", "EX", ARGV[2]) then
      code = 2
    elseif action == "enqueue" or action == "delay" then
      redis.call("hset", hash, id, payload)
      redis.call("rpush", list, id)
      if wake ~= "" then
        redis.call("lpush", wake, 1)
        redis.call("ltrim", wake, 0, tonumber(ARGV[3]) - 1)
      end
    elseif action == "dead" then
      redis.call("hset", hash, id, payload)
      redis.call("zadd", list, now, id)
    elseif action == "forward" then
      redis.call("lpush", list, payload)
    end
  end
  codes[#codes + 1] = code
end
return codes
