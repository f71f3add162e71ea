local h = ARGV[1]
local now, max, unused_for, retry_after = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local order = redis.call('HINCRBY', KEYS[1], '#n', 1)
redis.call('HSET', KEYS[1], 'm:' .. h, ARGV[2], 's:' .. h, ARGV[3], 'x:' .. h, ARGV[4], 'o:' .. h, order)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
local size = redis.call('HLEN', KEYS[1])
local whole = size <= tonumber(ARGV[9])
local fields = {}
if whole then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do fields[all[i]] = all[i + 1] end
else
  local page = redis.call('HSCAN', KEYS[1], redis.call('HGET', KEYS[1], '#c') or '0', 'COUNT', ARGV[10])
  redis.call('HSET', KEYS[1], '#c', page[1])
  local found = page[2]
  for i = 1, #found, 2 do
    local other = string.match(found[i], '^m:(.*)$')
    if other then
      fields[found[i]] = found[i + 1]
      local more = redis.call('HMGET', KEYS[1], 's:' .. other, 'x:' .. other, 'e:' .. other, 'o:' .. other)
      fields['s:' .. other], fields['x:' .. other], fields['e:' .. other], fields['o:' .. other] = more[1], more[2], more[3], more[4]
    end
  end
end
local live, evicted = {}, {}
for field, entry in pairs(fields) do
  local other = string.match(field, '^m:(.*)$')
  if other and other ~= h then
    local seen = tonumber(fields['s:' .. other] or '0')
    local ends = tonumber(fields['x:' .. other] or '0')
    local marked = tonumber(fields['e:' .. other] or '0')
    if ends <= now or seen + unused_for < now then
      redis.call('HDEL', KEYS[1], 'm:' .. other, 's:' .. other, 'x:' .. other, 'e:' .. other, 'o:' .. other)
    elseif marked > 0 then
      if marked + retry_after < now then
        redis.call('HSET', KEYS[1], 'e:' .. other, now)
        evicted[#evicted + 1] = other
        evicted[#evicted + 1] = entry
      end
    else
      live[#live + 1] = {other, seen, tonumber(fields['o:' .. other] or '0'), entry}
    end
  end
end
local excess = #live + 1 - max
if not whole then
  excess = math.min(#live, math.floor(redis.call('HLEN', KEYS[1]) / tonumber(ARGV[11])) - max)
end
if excess > 0 then
  table.sort(live, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    if a[3] ~= b[3] then return a[3] < b[3] end
    return a[1] < b[1]
  end)
  for i = 1, excess do
    redis.call('HSET', KEYS[1], 'e:' .. live[i][1], now)
    evicted[#evicted + 1] = live[i][1]
    evicted[#evicted + 1] = live[i][4]
  end
end
return {whole and 0 or 1, evicted}
