redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local expired = prune(KEYS[1], tonumber(ARGV[1]) - 60)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return expired
