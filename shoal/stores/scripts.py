"""The Lua scripts of the Redis store: each is one atomic protocol step in one round trip.

Key names come from :mod:`shoal.stores.keys`. A script that writes first checks that the run
still exists (``XADD ... NOMKSTREAM`` answers nil when the stream is gone) and leaves nothing
behind when it does not, so no key of a finished run is ever created again.

The marks follow :func:`shoal.decisions.mark_children`: a redelivered completion readies
nothing new, and exactly one completion owns each child.

Every step is safe to repeat, as the store repeats a step whose connection was lost (its
reply with it): a repeated completion gives its worker back what the first readied for it
(the owners tell), a repeated claim is refused (the lease then expires and the tasks are
recovered), hand-offs, renewals and releases are idempotent. Here the atomicity of the script does
what the owner claim does in memory, so the finished flag of the parent is enough to tell
a redelivery, and a child with several inputs keeps a count instead of a set.
"""

from __future__ import annotations

# Issues BITFIELD on KEYS[2] in chunks: Lua's unpack() takes at most a few thousand values.
_BITFIELD = """
local function bitfield(ops)
  local out = {}
  for s = 1, #ops, 4000 do
    local part = redis.call('BITFIELD', KEYS[2], unpack(ops, s, math.min(s + 3999, #ops)))
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  return out
end
"""

# The invocations handed out or running: the leases but the client's and the run's birth mark.
_LIVE = """
local function live(leases)
  return redis.call('HLEN', leases) - redis.call('HEXISTS', leases, '~')
    - redis.call('HEXISTS', leases, 'client')
end
"""

COMPLETE = (
    """
-- A batch of tasks finished (protocol step c): mark every child of each, store each output
-- that a consumer elsewhere may need, append the batch's task-finished events.
-- KEYS[1] outputs (hash)  KEYS[2] marks (string)  KEYS[3] events (stream)  KEYS[4] specs
-- KEYS[5] owners (hash): the children made ready become ARGV[5]'s (shoal.leases)
-- KEYS[6] leases (hash): only read, to tell the worker how many invocations are alive
-- KEYS[7] the wake stream, given only when the batch holds a sink: the client wakes
-- ARGV[1] the page size: also return the pages of specs of the children made ready; 0: don't
-- ARGV[2] the worker's fan-out: it keeps the first of that many even groups of the
--         children a completion readies (shoal.decisions.split_ready) and hands out the rest
-- ARGV[3] the batch's task-finished events (a JSON array, in batch order)
-- ARGV[4] other events to append in the same stream entry (a JSON array; '' for none)
-- ARGV[5] the worker's invocation
-- ARGV[6] p, then p pairs (page, signed page of specs): new tasks' specs (a map's
--         expansion, at ids RESERVE gave) to store in the same step
-- ARGV[7 + 2p ..] per completion: task id, upload (0 never, 1 unless every child is readied by
--            the batch and kept, 2 always), the output (signed; '' for upload 0), the bytes
--            of its blob (0 when the output itself is stored; else the output is a
--            reference to that blob: shoal.blobs), n (its number of children), the
--            plan's mask ('' without a plan; else n characters, '1' where the child is
--            planned on this worker: shoal.decisions.keeps), then n children and n needs
--            (each child's inputs)
-- Returns {ready_1, ..., ready_k, pages, stored, live}: the children each completion made
-- ready (its worker owns them; none for a redelivered completion), {page, blob, ...}
-- holding their specs if asked, the bytes of each output stored (-1 for a redelivery),
-- and the run's live invocations (as LIVE counts them).
-- Returns false when the run is gone; nothing is left written then.
"""
    + _BITFIELD
    + _LIVE
    + """
local fanout = tonumber(ARGV[2])
local comps, ops = {}, {}
local new_pages = tonumber(ARGV[6])
local pos = 7 + 2 * new_pages
while pos <= #ARGV do
  local c = {task = tonumber(ARGV[pos]), upload = ARGV[pos + 1], out = pos + 2,
             blob = tonumber(ARGV[pos + 3]), n = tonumber(ARGV[pos + 4]),
             mask = ARGV[pos + 5], kids = pos + 6, counted = {}}
  pos = c.kids + 2 * c.n
  ops[#ops + 1] = 'SET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = c.task * 32; ops[#ops + 1] = 1
  c.done = #ops / 4
  for i = 0, c.n - 1 do
    if tonumber(ARGV[c.kids + c.n + i]) > 1 then
      ops[#ops + 1] = 'INCRBY'; ops[#ops + 1] = 'u31'
      ops[#ops + 1] = tonumber(ARGV[c.kids + i]) * 32 + 1; ops[#ops + 1] = 1
      c.counted[i] = #ops / 4
    end
  end
  comps[#comps + 1] = c
end
local marks = bitfield(ops)
local reply, readied, kept, undo = {}, {}, {}, {}
for j, c in ipairs(comps) do
  local ready = {}
  if marks[c.done] == 1 then  -- a redelivery: undo its counts, ready nothing new
    c.again = true
    for i, _ in pairs(c.counted) do
      undo[#undo + 1] = 'INCRBY'; undo[#undo + 1] = 'u31'
      undo[#undo + 1] = tonumber(ARGV[c.kids + i]) * 32 + 1; undo[#undo + 1] = -1
    end
    -- The same worker repeating a step whose reply it lost (a connection lost): what the
    -- first delivery readied for it, and is still to run, is its again.
    for i = 0, c.n - 1 do
      local child = ARGV[c.kids + i]
      if redis.call('HGET', KEYS[5], child) == ARGV[5] and
         redis.call('BITFIELD', KEYS[2], 'GET', 'u1', tonumber(child) * 32)[1] == 0 then
        ready[#ready + 1] = tonumber(child)
      end
    end
  else
    for i = 0, c.n - 1 do
      local need = tonumber(ARGV[c.kids + c.n + i])
      if need == 1 or marks[c.counted[i]] == need then
        local child = tonumber(ARGV[c.kids + i])
        ready[#ready + 1] = child
        readied[child] = true
        if c.mask ~= '' and string.byte(c.mask, i + 1) == 49 then kept[child] = true end
      end
    end
  end
  reply[j] = ready
  if c.mask == '' then
    local first = #ready  -- the group split_ready keeps
    if first > 1 and fanout > 1 then
      local groups = math.min(first, fanout)
      first = math.floor(first / groups) + ((first % groups > 0) and 1 or 0)
    end
    for i = 1, first do kept[ready[i]] = true end
  end
end
if #undo > 0 then bitfield(undo) end
local fields, stored = {}, {}
for j, c in ipairs(comps) do
  local keep = c.upload == '2'
  if c.upload == '1' then
    for i = 0, c.n - 1 do
      if not kept[tonumber(ARGV[c.kids + i])] then keep = true; break end
    end
  end
  stored[j] = 0
  if c.again then
    stored[j] = -1  -- the reader drops the event of a redelivery
  elseif keep then
    fields[#fields + 1] = c.task; fields[#fields + 1] = ARGV[c.out]
    stored[j] = c.blob > 0 and c.blob or #ARGV[c.out]
  end
end
local entry = {'e', ARGV[3], 'b', cjson.encode(stored)}
if ARGV[4] ~= '' then entry[5] = 'x'; entry[6] = ARGV[4] end
if not redis.call('XADD', KEYS[3], 'NOMKSTREAM', '*', unpack(entry))
then  -- the run is gone: take back what this script created
  redis.call('DEL', KEYS[2])
  return false
end
if KEYS[7] then redis.call('XADD', KEYS[7], 'NOMKSTREAM', 'MAXLEN', '~', 64, '*', 'w', '') end
for s = 7, 6 + 2 * new_pages, 2000 do
  redis.call('HSET', KEYS[4], unpack(ARGV, s, math.min(s + 1999, 6 + 2 * new_pages)))
end
for s = 1, #fields, 2000 do
  redis.call('HSET', KEYS[1], unpack(fields, s, math.min(s + 1999, #fields)))
end
local owned = {}
for child, _ in pairs(readied) do owned[#owned + 1] = child; owned[#owned + 1] = ARGV[5] end
for s = 1, #owned, 2000 do
  redis.call('HSET', KEYS[5], unpack(owned, s, math.min(s + 1999, #owned)))
end
local pages = {}
local size = tonumber(ARGV[1])
if size > 0 then
  local ids, seen = {}, {}
  for child, _ in pairs(readied) do
    local page = math.floor(child / size)
    if not seen[page] then seen[page] = true; ids[#ids + 1] = page end
  end
  for s = 1, #ids, 4000 do
    local part = {unpack(ids, s, math.min(s + 3999, #ids))}
    local blobs = redis.call('HMGET', KEYS[4], unpack(part))
    for i, id in ipairs(part) do pages[#pages + 1] = id; pages[#pages + 1] = blobs[i] end
  end
end
reply[#comps + 1] = pages
reply[#comps + 2] = stored
reply[#comps + 3] = live(KEYS[6])
return reply
"""
)

RESERVE = """
-- Reserve ids for the tasks of map ARGV[1]'s expansion (shoal.graph.maps): ARGV[2] of
-- them, from the run's next free id; the same ones when asked again for that map.
-- KEYS[1] specs (hash: "n" the next free id, "x:<map>" the first id of its tasks)
-- KEYS[2] events (the run exists while its stream does)
-- Returns the first id, or false when the run is gone.
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
local first = redis.call('HGET', KEYS[1], 'x:' .. ARGV[1])
if first then return tonumber(first) end
first = redis.call('HINCRBY', KEYS[1], 'n', tonumber(ARGV[2])) - tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'x:' .. ARGV[1], first)
return first
"""

FAIL = """
-- A task failed for good: record the failure and append its event.
-- KEYS[1] failures (hash)   KEYS[2] events (stream)   KEYS[3] wake (stream)
-- ARGV[1] the task id   ARGV[2] the failure, signed   ARGV[3] the events (a JSON array)
-- ARGV[4] the run's TTL in seconds
-- Returns 1, or false when the run is gone (nothing written).
if not redis.call('XADD', KEYS[2], 'NOMKSTREAM', '*', 'e', ARGV[3]) then return false end
redis.call('XADD', KEYS[3], 'NOMKSTREAM', 'MAXLEN', '~', 64, '*', 'w', '')
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# The lease steps (shoal.leases, which these follow line for line). A lease is JSON on the
# server's clock: "e" its expiry (0: never), "c" 1 once claimed, "w" the worker, "t" the
# task it runs (-1: none yet).
_LEASES = """
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function expiry(now, lease_s)
  if lease_s <= 0 then return 0 end
  return now + lease_s
end
local function alive(lease, now)
  return lease and (lease.e == 0 or lease.e >= now)
end
local function lease_of(blob)
  if not blob then return nil end
  return cjson.decode(blob)
end
-- HMGET / HSET of many fields, in chunks (unpack() takes a few thousand values at most)
local function hmget(key, fields, first, last)
  local out = {}
  for s = first, last, 4000 do
    local part = redis.call('HMGET', key, unpack(fields, s, math.min(s + 3999, last)))
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  return out
end
local function hset_all(key, pairs_)
  for s = 1, #pairs_, 4000 do
    redis.call('HSET', key, unpack(pairs_, s, math.min(s + 3999, #pairs_)))
  end
end
"""

HAND_OFF = (
    """
-- A parent ('' the client) hands tasks it owns to new invocations, under pending leases.
-- KEYS[1] leases  KEYS[2] owners  KEYS[3] events
-- ARGV[1] parent  ARGV[2] lease seconds (0: never expires)
-- ARGV[3 ..] per invocation: its id, n, then n tasks
"""
    + _LEASES
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
local now, lease_s = clock(), tonumber(ARGV[2])
local pos = 3
while pos <= #ARGV do
  local inv, n = ARGV[pos], tonumber(ARGV[pos + 1])
  if n > 0 and redis.call('HEXISTS', KEYS[2], 'c:' .. inv) == 0 then  -- not claimed yet
    local owners, moved = hmget(KEYS[2], ARGV, pos + 2, pos + 1 + n), {}
    for i = 1, n do
      if (owners[i] or '') == ARGV[1] then
        moved[#moved + 1] = ARGV[pos + 1 + i]; moved[#moved + 1] = inv
      end
    end
    hset_all(KEYS[2], moved)
    if #moved > 0 then
      local lease = {e = expiry(now, lease_s), c = 0, w = '', t = -1}
      redis.call('HSET', KEYS[1], inv, cjson.encode(lease))
    end
  end
  pos = pos + 2 + n
end
return 1
"""
)

CLAIM = (
    """
-- A worker starts on an invocation: claim it once, take over its tasks, append its started
-- event. KEYS[1] leases  KEYS[2] owners  KEYS[3] events
-- ARGV[1] invocation  ARGV[2] parent  ARGV[3] worker  ARGV[4] lease seconds
-- ARGV[5] the started events (JSON; '' for none)  ARGV[6 ..] its tasks
-- Returns 1 (run it), 0 (refused: claimed before, or its tasks were recovered), -1 (the
-- run is gone).
"""
    + _LEASES
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local inv, parent = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[2], 'c:' .. inv) == 1 then return 0 end
local owners, taken = hmget(KEYS[2], ARGV, 6, #ARGV), {'c:' .. inv, 1}
for i = 6, #ARGV do
  local owner = owners[i - 5] or parent
  if owner ~= inv and owner ~= parent then return 0 end
  taken[#taken + 1] = ARGV[i]; taken[#taken + 1] = inv
end
hset_all(KEYS[2], taken)
local lease = {e = expiry(clock(), tonumber(ARGV[4])), c = 1, w = ARGV[3], t = -1}
redis.call('HSET', KEYS[1], inv, cjson.encode(lease))
if ARGV[5] ~= '' then redis.call('XADD', KEYS[3], '*', 'e', ARGV[5]) end
return 1
"""
)

RENEW = (
    """
-- Heartbeats: extend leases. KEYS[1] leases  KEYS[2] events  KEYS[3 ..] the run's others
-- ARGV[1] lease seconds  ARGV[2 ..] pairs of invocation and the task it runs (-1: unsaid)
-- Returns the invocations whose lease is gone; false when the run is gone, or abandoned
-- (its client's lease expired: then the run is deleted here).
"""
    + _LEASES
    + """
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
local now, lease_s, lost = clock(), tonumber(ARGV[1]), {}
local client = lease_of(redis.call('HGET', KEYS[1], 'client'))
if client and not alive(client, now) then
  redis.call('DEL', unpack(KEYS))
  return false
end
for i = 2, #ARGV, 2 do
  local lease = lease_of(redis.call('HGET', KEYS[1], ARGV[i]))
  if lease then
    lease.e = expiry(now, lease_s)
    if tonumber(ARGV[i + 1]) >= 0 then lease.t = tonumber(ARGV[i + 1]) end
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(lease))
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
)

RELEASE = """
-- A worker stopped: drop its lease, append its last events.
-- KEYS[1] leases  KEYS[2] events  KEYS[3] wake   ARGV[1] invocation  ARGV[2] events (JSON)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'NOMKSTREAM', '*', 'e', ARGV[2])
redis.call('XADD', KEYS[3], 'NOMKSTREAM', 'MAXLEN', '~', 64, '*', 'w', '')
return 1
"""

LIVE = (
    """
-- How many invocations are handed out or running.  KEYS[1] leases
"""
    + _LIVE
    + """
return live(KEYS[1])
"""
)

EXPIRED = (
    """
-- The invocations whose lease ran out.  KEYS[1] leases
"""
    + _LEASES
    + """
local now, out = clock(), {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= '~' and not alive(cjson.decode(all[i + 1]), now) then out[#out + 1] = all[i] end
end
return out
"""
)

RECOVER = (
    """
-- Give the ready, unfinished tasks of lost invocations to new pending ones (one per lost
-- invocation), counting a loss for each; drop expired leases.
-- KEYS[1] leases  KEYS[2] owners  KEYS[3] marks  KEYS[4] events
-- ARGV[1] prefix of the new ids  ARGV[2] lease seconds  ARGV[3] d, then d dead invocations,
-- then the candidate tasks
-- Returns per new invocation {lost, worker, running, id, {tasks}, {losses}}; false when
-- the run is gone.
"""
    + _LEASES
    + """
if redis.call('EXISTS', KEYS[4]) == 0 then return false end
local now, lease_s = clock(), tonumber(ARGV[2])
local dead, d = {}, tonumber(ARGV[3])
for i = 4, 3 + d do dead[ARGV[i]] = true end
local first = 4 + d
local ops = {}
for i = first, #ARGV do
  ops[#ops + 1] = 'GET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = tonumber(ARGV[i]) * 32
end
local done = {}
for s = 1, #ops, 3000 do
  local part = redis.call('BITFIELD', KEYS[3], unpack(ops, s, math.min(s + 2999, #ops)))
  for _, v in ipairs(part) do done[#done + 1] = v end
end
local lost, order, leases = {}, {}, {}
for i = first, #ARGV do
  local task = ARGV[i]
  local owner = redis.call('HGET', KEYS[2], task)
  if owner and done[i - first + 1] == 0 then
    if leases[owner] == nil then
      leases[owner] = lease_of(redis.call('HGET', KEYS[1], owner)) or false
    end
    if dead[owner] or not alive(leases[owner], now) then
      if not lost[owner] then lost[owner] = {}; order[#order + 1] = owner end
      table.insert(lost[owner], task)
    end
  end
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= '~' and (dead[all[i]] or not alive(cjson.decode(all[i + 1]), now)) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local reply = {}
for k, owner in ipairs(order) do
  local inv = ARGV[1] .. (k - 1)
  local lease = leases[owner] or {w = '', t = -1}
  local losses = {}
  for _, task in ipairs(lost[owner]) do
    redis.call('HSET', KEYS[2], task, inv)
    losses[#losses + 1] = redis.call('HINCRBY', KEYS[2], 'n:' .. task, 1)
  end
  redis.call('HSET', KEYS[1], inv, cjson.encode({e = expiry(now, lease_s), c = 0, w = '', t = -1}))
  reply[k] = {owner, lease.w, lease.t, inv, lost[owner], losses}
end
return reply
"""
)

STORED = """
-- Which of the tasks ARGV have their output stored: a string of '1'/'0'.  KEYS[1] outputs
local out = {}
for i = 1, #ARGV do out[i] = tostring(redis.call('HEXISTS', KEYS[1], ARGV[i])) end
return table.concat(out)
"""

MERGE_STATS = """
-- Write merged statistics if nobody merged since they were read (optimistic concurrency:
-- the caller reads, merges in Python, and retries when this answers 0).
-- KEYS[1] a statistics hash (its "~v" field counts merges)
-- ARGV[1] the "~v" the caller read ('' when there was none)
-- ARGV[2 ..] field, JSON value pairs
-- Returns 1 when written, 0 when someone merged first (nothing written).
if (redis.call('HGET', KEYS[1], '~v') or '') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', KEYS[1], '~v', 1)
return 1
"""

ADD_RUN = """
-- Keep a run's record, and only the newest ARGV[2] runs of its workflow.
-- KEYS[1] the workflow's runs (zset)   KEYS[2] its records (hash)
-- ARGV[1] run id   ARGV[2] runs to keep   ARGV[3] its start (wall clock)   ARGV[4] record
-- Returns how many older runs were dropped.
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if extra <= 0 then return 0 end
local old = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
redis.call('HDEL', KEYS[2], unpack(old))
return extra
"""
