-- cog-ratelimit: one decision against a quota of one GCRA limit (the
-- common case), on Redis time. The generic script's arithmetic for 'g'
-- (redis.lua), without its multi-limit machinery: no closures, no tables
-- but the reply, no argument parsing by kind.
--
-- KEYS[1]: the limit's state. ARGV[1] cost, ARGV[2] T (µs per unit),
-- ARGV[3] tau (µs burst tolerance). Always counts an admitted request.
-- Returns one integer, the least Redis can send: when admitted, how far
-- ahead of now the state stands (ns, >= 0); when refused, -1 minus how far
-- it stood before (ns). The client derives remaining, reset and retry from
-- it with the memory store's arithmetic (algo.rs, `Gcra::admitted` and
-- `Gcra::refused`).
-- Garbage under the key (see redis_state.lua) is discarded and treated
-- as fresh state.

local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local key = KEYS[1]
local c, T, tau = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
-- false (no key), the state, garbage, or an error table (wrong type).
local v = redis.pcall('GET', key)
local tat = tonumber(v)
if v and not tat then redis.call('DEL', key) end
if not tat or tat < now then tat = now end
-- Differences before sums, half a microsecond of slack: see redis.lua.
local used = tat - now
if stray(key, used, tau) then
  redis.call('DEL', key)
  used = 0
end
local diff = used + c * T
if diff <= tau + 0.5 then
  redis.call('SET', key, string.format('%.17g', now + diff), 'PX', math.ceil(diff / 1000) + 1)
  return math.floor(diff * 1000 + 0.5)
end
return -1 - math.floor(used * 1000 + 0.5)
