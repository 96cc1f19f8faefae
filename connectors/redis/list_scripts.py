"""The Lua scripts of :class:`connectors.redis.list_source.ReliableRedisListSource`, one round trip each.

Keys, modes and the delivery counting are described in :mod:`connectors.redis.list_source`.
"""

# KEYS: source, processing, offset counter. ARGV: max elements, in-flight cap (0: none).
# Returns {count after the move (or -1 when uncounted), element...}; moved elements are oldest first.
MOVE = """
local n = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if cap > 0 then
  local room = cap - redis.call('LLEN', KEYS[2])
  if room < n then n = room end
end
local out = {0}
for i = 1, n do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[#out + 1] = v
end
if KEYS[3] ~= '' then
  out[1] = redis.call('INCRBY', KEYS[3], #out - 1)
else
  out[1] = -1
end
return out
"""

# Start-up: read the leftovers and their delivery counts, in one script.
# KEYS: processing, offset counter ('' in explicit mode), deliveries hash. ARGV: max deliveries, resume offset
# ('' for none). Returns {count (-1 uncounted), base, then per leftover at or after the resume point, oldest first:
# offset (-1 uncounted), element, deliveries so far (>= 1; the first delivery is not recorded), or -N: delivered
# N times, bury it}. Elements buried before (recovery mode) are left out. The hash is rebuilt to hold only these
# leftovers, so what was finished since the last start is forgotten.
LOAD = """
local maxd = tonumber(ARGV[1])
local held = redis.call('LRANGE', KEYS[1], 0, -1)
local n = #held
local count, base, start = -1, 0, 0
if KEYS[2] ~= '' then
  count = tonumber(redis.call('GET', KEYS[2]) or '0')
  base = count - n
  start = base
  if ARGV[2] ~= '' then
    local r = tonumber(ARGV[2])
    if r >= base and r <= count then start = r end
  end
end
local old = {}
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do old[flat[i]] = flat[i + 1] end
redis.call('DEL', KEYS[3])
local out = {count, base}
local keep, stat = {}, {}
for i = n, 1, -1 do
  local v = held[i]
  local off = base + (n - i)
  if count < 0 or off >= start then
    local f
    if count < 0 then f = redis.sha1hex(v) else f = tostring(off) end
    if keep[f] == nil then
      local o = old[f]
      if o == 'dead' then
        keep[f], stat[f] = 'dead', false
      else
        local d = tonumber(o or '1') or 1
        keep[f] = tostring(d)
        -- recovery mode: dead at maxd only if the last run died right after delivering it alone (see
        -- _DELIVER), else at twice that (a crash further down the dataflow still ends the loop)
        local dead = d >= 2 * maxd or (d >= maxd and (count < 0 or f == old['last']))
        if dead then stat[f] = -d else stat[f] = d end
      end
    end
    if stat[f] then
      if count < 0 then off = -1 end
      out[#out + 1] = off
      out[#out + 1] = v
      out[#out + 1] = stat[f]
    end
  end
end
for f, d in pairs(keep) do
  if d ~= '1' then redis.call('HSET', KEYS[3], f, d) end
end
return out
"""

# Deliver one suspect leftover (explicit mode: once the previous suspect is finished).
# KEYS: processing, deliveries hash. ARGV: the previous suspect ('' for none), field of the next one, its
# deliveries including this one, recovery mode: '1' to record it as the field 'last' (the run is on it).
# Returns 0 while the previous suspect is still held, else 1.
DELIVER = """
if ARGV[1] ~= '' and redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3], 'last', ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return 1
"""

# Dead-letter one leftover. KEYS: processing, deliveries hash, dead list. ARGV: field, element, dead JSON,
# mode ('explicit': take it out of processing; 'recovery': leave it, mark the field). Idempotent.
BURY = """
if ARGV[4] == 'explicit' then
  if redis.call('LREM', KEYS[1], 1, ARGV[2]) == 0 then return 0 end
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  if redis.call('HGET', KEYS[2], ARGV[1]) == 'dead' then return 0 end
  redis.call('HSET', KEYS[2], ARGV[1], 'dead')
end
redis.call('LPUSH', KEYS[3], ARGV[3])
return 1
"""

# KEYS: processing, offset counter. ARGV: first offset to keep. Drops the elements below it.
TRIM = """
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
local keep = count - tonumber(ARGV[1])
if keep <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], 0, keep - 1)
end
return keep
"""
