for i = 1, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local left = redis.call('HLEN', KEYS[1])
if left > 0 and left <= 2 then
  local counters = redis.call('HEXISTS', KEYS[1], '#n') + redis.call('HEXISTS', KEYS[1], '#c')
  if counters == left then redis.call('DEL', KEYS[1]) end
end
return left
