for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], 'm:' .. ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], 'e:' .. ARGV[i], ARGV[1])
  end
end
return 1
