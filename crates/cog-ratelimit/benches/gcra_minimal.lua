-- The least a shared single-limit GCRA decision can cost Redis: read the
-- clock, read the state, write it back when admitted. No garbage handling,
-- no status for headers, no retry time. The yardstick for cog's own
-- scripts in `scripts/bench-redis-decisions`; not used by the store.
--
-- KEYS[1] state; ARGV[1] T (µs per unit), ARGV[2] tau (µs).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local diff = tat - now + tonumber(ARGV[1])
if diff > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%.17g', now + diff), 'PX', math.ceil(diff / 1000) + 1)
return 1
