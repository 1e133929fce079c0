-- cog-ratelimit: what the decision scripts share (prepended to each, so
-- it is defined before their own code).
--
-- Every key these scripts write gets an expiry in the same call, and a
-- GCRA state is a number that expires when its lead runs out
-- (`SET … PX lead + 1 ms`): it never stands further ahead of now than its
-- expiry. A value that breaks this was not written here, and one that
-- refuses would refuse the subject for ever (and a denial remembered
-- locally with it: `nan` reads back as a wait of 292 years). Such values
-- are garbage, discarded like any other.
--
-- Lead and expiry are read on this server's clock. A replica keeps a key's
-- expiry as a point in time, so after a failover both move alike; a state
-- copied from another deployment (a partition move) keeps its expiry as a
-- duration, so that deployment's clock may differ: a second of difference
-- is allowed for.
local SKEW = 1000000

-- Whether a GCRA state standing `lead` µs ahead of now is garbage: not a
-- number, or — past the burst `tau`, where it refuses — without an expiry
-- or outliving it by more than the clocks may differ (infinity does; 2 ms
-- more for rounding to milliseconds).
local function stray(key, lead, tau)
  if lead ~= lead then return true end
  if lead <= tau + 0.5 then return false end
  local ttl = redis.call('PTTL', key)
  return ttl < 0 or lead > (ttl + 2) * 1000 + SKEW
end

-- Whether `key`, holding counts that refuse, has no expiry (or is gone).
local function unexpiring(key)
  return redis.call('PTTL', key) < 0
end

-- A count as these scripts write it: a finite number, not negative; nil
-- for anything else.
local function count(v)
  local n = tonumber(v)
  if n and n >= 0 and n < math.huge then return n end
  return nil
end

