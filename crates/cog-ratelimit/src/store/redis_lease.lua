-- cog-ratelimit, leased mode: one decision against a quota of one GCRA
-- limit, and a lease of more units for the instance to spend locally, on
-- Redis time. The GCRA arithmetic of redis_gcra.lua, plus a ledger of the
-- units leased out and not yet accounted for.
--
-- KEYS[1]: the limit's state (the TAT, as in redis_gcra.lua).
-- KEYS[2]: the lease ledger, a hash: 'o' units leased out (outstanding),
--          's' of them already given to refused requests (stolen).
-- ARGV[1] cost, ARGV[2] T (µs per unit), ARGV[3] tau (µs),
-- ARGV[4] want: units to lease besides the cost (0: an exact decision),
-- ARGV[5] size of the lease this instance gives back (0: none),
-- ARGV[6] its units left unspent, ARGV[7] ledger lifetime (ms).
--
-- Returns {code, ns, granted}:
--   code 1: admitted and counted; ns = how far ahead of now the state
--           stands after it (the lease included); granted = units leased.
--   code 2: admitted against units leased out elsewhere and not spent yet
--           ("stolen": a subject under its limit is not refused because
--           its budget sits on another instance); ns = the state's lead.
--   code 0: refused; ns = how far ahead of now the state stands.
--
-- The lease is at most a quarter of what is left after the request, so
-- leases shrink to nothing (exact decisions) as the subject nears its
-- limit. Garbage under either key (see redis_state.lua) is discarded and
-- treated as fresh.

local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local key, book = KEYS[1], KEYS[2]
local c, T, tau = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want, bsize, bunused = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local v = redis.pcall('GET', key)
local tat = tonumber(v)
if (v and not tat) or (tat and stray(key, tat - now, tau)) then
  redis.call('DEL', key)
  tat = nil
end
local wrote = false

local out, stolen = 0, 0
local b = redis.pcall('HMGET', book, 'o', 's')
if b.err then
  redis.call('DEL', book)
elseif b[1] or b[2] then
  out, stolen = count(b[1]), count(b[2])
  if not (out and stolen) then
    redis.call('DEL', book)
    out, stolen = 0, 0
  end
end
local out0, stolen0 = out, stolen

if not tat then tat = now end
if bsize > 0 then
  -- A lease comes back: it is no longer outstanding, and its unspent units
  -- return to the budget, less those already given to refused requests.
  out = math.max(out - bsize, 0)
  local s = math.min(stolen, bunused)
  stolen = stolen - s
  if bunused > s then
    tat = tat - (bunused - s) * T
    wrote = true
  end
end
if stolen > out then stolen = out end
if tat < now then tat = now end

local used = tat - now
local diff = used + c * T
local code, granted, lead = 0, 0, used
if diff <= tau + 0.5 then
  code = 1
  granted = math.floor(math.max(tau - diff, 0) / T / 4)
  if granted > want then granted = want end
  diff = diff + granted * T
  out = out + granted
  lead = diff
  tat = now + diff
  wrote = true
elseif c * T <= tau + 0.5 and out - stolen >= c then
  code = 2
  stolen = stolen + c
end

if wrote then
  redis.call('SET', key, string.format('%.17g', now + lead), 'PX', math.ceil(lead / 1000) + 1)
end
if out ~= out0 or stolen ~= stolen0 then
  if out > 0 then
    redis.call('HSET', book, 'o', out, 's', stolen)
    redis.call('PEXPIRE', book, ARGV[7])
  else
    redis.call('DEL', book)
  end
end
return {code, math.floor(lead * 1000 + 0.5), granted}
