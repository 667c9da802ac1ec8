-- Give messages this process fetched back to the head of their queue, if they are still its own: a message
-- that Recovery already requeued (it judged this process dead) is no longer in its in-flight set, and is left
-- alone. Used for jobs abandoned when the process lost its lease (middleware/fence.py) or at shutdown.
-- KEYS: this process's in-flight set of the queue (Dramatiq's __acks__), the queue, its payloads hash.
-- ARGV: the message ids. Returns how many went back.
local given = 0
for i = 1, #ARGV do
  if redis.call("srem", KEYS[1], ARGV[i]) == 1 and redis.call("hexists", KEYS[3], ARGV[i]) == 1 then
    redis.call("lpush", KEYS[2], ARGV[i])
    given = given + 1
  end
end
return given
