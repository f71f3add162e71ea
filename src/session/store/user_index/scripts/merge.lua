local added = 0
for i = 2, #ARGV, 5 do
  local h = ARGV[i]
  if redis.call('HSETNX', KEYS[1], 'm:' .. h, ARGV[i + 1]) == 1 then
    added = added + 1
    redis.call('HSET', KEYS[1], 'x:' .. h, ARGV[i + 3], 'o:' .. h, redis.call('HINCRBY', KEYS[1], '#n', 1))
  end
  if tonumber(ARGV[i + 2]) > tonumber(redis.call('HGET', KEYS[1], 's:' .. h) or '0') then
    redis.call('HSET', KEYS[1], 's:' .. h, ARGV[i + 2])
  end
  if ARGV[i + 4] ~= '' then redis.call('HSETNX', KEYS[1], 'e:' .. h, ARGV[i + 4]) end
end
if added > 0 and redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return added
