-- Put what dead worker processes had fetched back at the head of its queue (Dramatiq's layout, spelled
-- by layout.DramatiqKeys and passed in).
-- KEYS: Dramatiq's heartbeats zset. ARGV: now (ms), heartbeat timeout (ms), acks prefix ("<ns>:__acks__."),
-- queue prefix ("<ns>:"), payloads suffix (".msgs"), then the queue names.
-- A worker's acks set of a queue is <acks prefix><worker>.<queue>. Returns how many messages were requeued.
local heartbeats = KEYS[1]
local acks_prefix, queue_prefix, messages_suffix = ARGV[3], ARGV[4], ARGV[5]
local dead = redis.call("zrangebyscore", heartbeats, 0, tonumber(ARGV[1]) - tonumber(ARGV[2]))
local requeued = 0
for _, worker in ipairs(dead) do
  local acks = acks_prefix .. worker
  for i = 6, #ARGV do
    local queue = ARGV[i]
    local ids = redis.call("smembers", acks .. "." .. queue)
    for _, id in ipairs(ids) do
      if redis.call("hexists", queue_prefix .. queue .. messages_suffix, id) == 1 then
        redis.call("lpush", queue_prefix .. queue, id)
        requeued = requeued + 1
      end
    end
    redis.call("del", acks .. "." .. queue)
  end
  if next(redis.call("keys", acks .. ".*")) == nil then
    redis.call("zrem", heartbeats, worker)
  end
end
return requeued
