local function prune(key, before)
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. before, 'WITHSCORES', 'LIMIT', 0, 1000)
  local members, absolute = {}, 0
  for i = 1, #gone, 2 do
    members[#members + 1] = gone[i]
    if tonumber(gone[i + 1]) % 1 ~= 0 then absolute = absolute + 1 end
  end
  if #members > 0 then redis.call('ZREM', key, unpack(members)) end
  return {#members - absolute, absolute}
end
