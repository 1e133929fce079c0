-- cog-ratelimit: one decision for one subject against several limits,
-- all-or-nothing, on Redis time.
--
-- KEYS[i]: state of limit i (all in one hash slot: the subject's hash tag).
-- ARGV[1] cost, ARGV[2] commit ('1' count if admitted, '0' only look),
-- ARGV[3] lease member id (concurrency), then 4 args per limit:
--   'g', T (µs per unit), tau (µs burst tolerance), -
--   's', window (µs), max, -
--   'c', max, lease (µs), -
-- Returns {allowed, retry_us (-1: never), then per limit:
--          allowed, remaining, reset_us}.
-- Garbage under one of our keys (see redis_state.lua) is discarded and
-- treated as fresh state.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local commit = ARGV[2] == '1'
local member = ARGV[3]
local EPS = 1e-6

local function fresh(key)
  redis.call('DEL', key)
end

-- Times are microseconds since the epoch (~1.7e15): a double holds them
-- to a quarter of a microsecond, so a sum like `now + c * T` is not exact.
-- Differences are taken before adding (`tat - now`, small), and time
-- comparisons allow half a microsecond — the resolution of Redis TIME.
local US = 0.5

local function gcra(key, T, tau, c)
  local ok, v = pcall(redis.call, 'GET', key)
  local tat = ok and tonumber(v) or nil
  if not ok or (v and not tat) then fresh(key) end
  if tat == nil or tat < now then tat = now end
  if stray(key, tat - now, tau) then
    fresh(key)
    tat = now
  end
  local used = tat - now
  local diff = used + c * T
  if diff <= tau + US then
    return 1, math.floor((math.max(tau - diff, 0) + US) / T), diff, 0, function()
      redis.call('SET', key, string.format('%.17g', now + diff), 'PX', math.ceil(diff / 1000) + 1)
    end
  end
  local retry = -1
  if c * T <= tau + US then retry = diff - tau end
  return 0, math.floor((math.max(tau - used, 0) + US) / T), used, retry, nil
end

local function sliding(key, W, max, c)
  local ok, v = pcall(redis.call, 'HMGET', key, 'i', 'c', 'p')
  local idx, curr, prev
  if ok then
    idx, curr, prev = count(v[1]), count(v[2]), count(v[3])
  end
  if not (idx and curr and prev) then
    if not ok or v[1] or v[2] or v[3] then fresh(key) end
    idx, curr, prev = 0, 0, 0
  end
  -- Counts that may refuse are ours only with an expiry.
  if curr + prev > 0 and curr + prev + c > max + EPS and unexpiring(key) then
    fresh(key)
    idx, curr, prev = 0, 0, 0
  end
  local cidx = math.floor(now / W)
  if cidx == idx + 1 then
    prev, curr = curr, 0
  elseif cidx ~= idx then
    prev, curr = 0, 0
  end
  local elapsed = now - cidx * W
  local weight = (W - elapsed) / W
  local used = prev * weight + curr
  local admit = used + c <= max + EPS
  local new_curr = curr
  if admit then new_curr = curr + c end
  local remaining = math.floor(math.max(max - (prev * weight + new_curr), 0) + EPS)
  local to_end = W - elapsed
  local reset = 0
  if new_curr > 0 then reset = to_end + W elseif prev > 0 then reset = to_end end
  if admit then
    return 1, remaining, reset, 0, function()
      redis.call('HSET', key, 'i', cidx, 'c', new_curr, 'p', prev)
      redis.call('PEXPIRE', key, math.ceil(2 * W / 1000) + 1)
    end
  end
  local retry
  if c > max then
    retry = -1
  else
    retry = nil
    if curr + c <= max and prev > 0 then
      local e = W - (max - curr - c) * W / prev
      if e > elapsed then retry = e - elapsed end
    end
    if retry == nil then
      if curr == 0 then
        retry = to_end
      else
        retry = to_end + math.max(W - (max - c) * W / curr, 0)
      end
    end
  end
  return 0, remaining, reset, retry, nil
end

local function concurrency(key, max, lease, c)
  local ok = pcall(redis.call, 'ZREMRANGEBYSCORE', key, '-inf', now)
  if not ok then fresh(key) end
  local in_flight = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    in_flight = in_flight + (tonumber(string.match(m, ':(%d+)$')) or 1)
  end
  -- Slots that refuse are ours only with an expiry.
  if in_flight > 0 and in_flight + c > max and unexpiring(key) then
    fresh(key)
    in_flight = 0
  end
  if in_flight + c <= max then
    return 1, max - in_flight - c, 0, 0, function()
      if c > 0 then
        redis.call('ZADD', key, now + lease, member .. ':' .. c)
        redis.call('PEXPIRE', key, math.ceil(lease / 1000) + 1)
      end
    end
  end
  local retry = 1000000
  if c > max then retry = -1 end
  return 0, math.max(max - in_flight, 0), 0, retry, nil
end

local function run(i, c)
  local base = 3 + (i - 1) * 4
  local kind = ARGV[base + 1]
  local a, b = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if kind == 'g' then return gcra(KEYS[i], a, b, c) end
  if kind == 's' then return sliding(KEYS[i], a, b, c) end
  return concurrency(KEYS[i], a, b, c)
end

local all = 1
local retry = 0
local out = {}
local writes = {}
for i = 1, #KEYS do
  local ok, remaining, reset, r, write = run(i, cost)
  if ok == 0 then
    all = 0
    if r < 0 or retry < 0 then retry = -1 elseif r > retry then retry = r end
  end
  out[i] = {ok, remaining, reset}
  writes[i] = write
end

if all == 1 then
  if commit then
    for i = 1, #KEYS do writes[i]() end
  end
else
  -- Nothing is spent: show the admitting limits as they stand.
  for i = 1, #KEYS do
    if out[i][1] == 1 then
      local _, remaining, reset = run(i, 0)
      out[i][2], out[i][3] = remaining, reset
    end
  end
end

local reply = {all, math.ceil(retry)}
for i = 1, #KEYS do
  reply[#reply + 1] = out[i][1]
  reply[#reply + 1] = out[i][2]
  reply[#reply + 1] = math.ceil(out[i][3])
end
return reply
