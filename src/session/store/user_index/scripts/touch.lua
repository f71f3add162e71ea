if redis.call('HEXISTS', KEYS[1], 'm:' .. ARGV[1]) == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 's:' .. ARGV[1]) or '0')
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[2]) end
return 1
