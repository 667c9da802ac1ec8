-- Take up to ARGV[1] Celery messages off a kombu queue into this process's in-flight list (Celery ingress).
-- KEYS[1]: the in-flight list (layout.Keys.celery_inflight); KEYS[2]: the owners zset (layout.Keys.celery_owners);
-- KEYS[3..]: the queue's kombu lists in the order a kombu consumer reads them (layout.KombuKeys.queues).
-- ARGV[1]: how many to take (0: only the heartbeat); ARGV[2]: now (ms); ARGV[3]: this list's owners member.
-- The heartbeat and the moves are one step: an in-flight list never holds a message while its member is
-- missing from the owners zset, so a process that dies at any instant leaves nothing that cannot be found.
-- Kombu LPUSHes and consumers take from the right, so LMOVE RIGHT keeps FIFO; a move is never a copy.
-- Returns the messages taken, oldest first.
redis.call("zadd", KEYS[2], tonumber(ARGV[2]), ARGV[3])
local want = tonumber(ARGV[1])
local taken = {}
for i = 3, #KEYS do
  while #taken < want do
    local item = redis.call("lmove", KEYS[i], KEYS[1], "RIGHT", "LEFT")
    if not item then break end
    taken[#taken + 1] = item
  end
  if #taken >= want then break end
end
return taken
