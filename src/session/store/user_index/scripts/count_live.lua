local expired = prune(KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[2]))
return {redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf'), expired[1], expired[2]}
