-- Recommendation cache (Tarantool serves as the recommendation cache, as in the field report).
-- One tuple per client: {subject, bucket_id, expires_at, payload, gen}.
--
-- `gen` marks the client's status changes. Any write of an application or product event for the client,
-- or a client-data replace, gives it a new gen in the same transaction and clears the payload (the tuple stays
-- as a short-lived marker holding the new gen), so the next answer is computed fresh and an applied-for product
-- disappears at once ("no failed recommendations").
--
-- A put is conditional: the manager passes the gen and the time of the read its answer was computed from,
-- and the put is refused when the gen moved since (a status change landed between the read and the put) or
-- the read is older than MAX_READ_AGE (a put delayed by a stalled master). Without this an answer read just
-- before an application and written just after it would be served from the cache with the applied product.
--
-- The space is temporary: each master keeps its own cache in memory, neither written to the WAL nor
-- replicated. Replicated, every answer cost a WAL write and four applied rows on the replicas (a full mesh),
-- about a quarter of the machine's CPU per request at 500 requests/s (docs/benchmarks.md), for answers only a
-- master ever serves. What replication used to guarantee, the gens now do by their form, "<instance uuid>/<n>":
-- - n comes from one counter per instance, started at the wall clock in microseconds when the instance
--   starts, so no n is issued twice by an instance, not even across a restart;
-- - rows written before this instance last became master or stopped being master (M.forget) count as absent:
--   while it was not the master, status changes were written elsewhere and only replicated here, without
--   clearing its answers;
-- - a gen names the instance it was read on, so a put computed from a read on another instance (a replica, the
--   old master, the other side of a bucket move) never matches and is refused.
local errors = require('errors')
local buckets = require('buckets')
local clock = require('clock')
local fiber = require('fiber')

local M = {}

-- Sources whose events change what may be recommended.
M.INVALIDATING_SOURCES = {applications = true, products = true}
-- A cleared entry keeps its gen at least this long (seconds), well past MAX_READ_AGE.
M.MARKER_TTL = 60
-- A put computed from a read older than this (seconds, by this instance's clock) is refused.
M.MAX_READ_AGE = 2

local F_EXPIRES, F_PAYLOAD, F_GEN = 3, 4, 5

local issued = math.floor(clock.realtime() * 1e6)  -- the last n issued
local valid_from = issued  -- rows with a smaller n were written before the last forget
local foreign_seen = nil  -- foreign_lsns() when last looked at
-- subject -> how many transactions that cleared the client are still waiting for the WAL. A put meanwhile is
-- refused: it would be built from facts not yet durable, and a write to this temporary space commits at once,
-- so it would overwrite the row a pending transaction must restore if its WAL write fails.
local pending = {}
-- The clients the running transaction cleared. Procedures do not yield between their writes and their commit
-- (as counts.lua relies on too), so one list serves whichever transaction is running; counts.commit() hands
-- it to M.hold() right before box.commit() and to M.release() when the commit is over, either way. (Commit and
-- rollback triggers per transaction did the same but made the masters' later reads about twice as expensive:
-- `rtrec bench serve`, docs/benchmarks.md.)
local cleared_now = {}

local function next_n()
    issued = issued + 1
    return issued
end

-- Sum of the vclock components written elsewhere (not this instance's own, not 0: local rows). A numeric loop
-- over the possible instance ids rather than pairs(): this runs on every read, and pairs() stops LuaJIT's traces.
local VCLOCK_MAX = 32
local function foreign_lsns()
    local own, vclock, sum = box.info.id, box.info.vclock, 0
    for id = 1, VCLOCK_MAX do
        local lsn = vclock[id]
        if lsn ~= nil and id ~= own then
            sum = sum + lsn
        end
    end
    return sum
end

-- Forget every cached answer and gen (mastership promote/demote/fence, bucket activation).
function M.forget()
    valid_from = next_n()
    foreign_seen = foreign_lsns()
end

-- Rows written elsewhere and applied here by replication can change a client's status without clearing the
-- answer cached here (only this instance's own procedures clear). A healthy master receives none (its replicas
-- write nothing); after a failover the old master's last rows may still arrive through a replica. So whenever
-- any arrived since it last looked, the cache forgets everything.
local function forget_if_replicated()
    local seen = foreign_lsns()
    if foreign_seen ~= nil and seen ~= foreign_seen then
        valid_from = next_n()
    end
    foreign_seen = seen
end

-- The n of the client's current gen: its row's when written since the last forget, else valid_from.
local function current_n(t)
    local n = t ~= nil and tonumber(t[F_GEN]) or nil  -- a large unsigned field reads as a 64-bit cdata
    if n == nil or n < valid_from then
        return valid_from
    end
    return n
end

local uuid = nil  -- this instance's, fixed once box.cfg has run

local function token(n)
    uuid = uuid or box.info.uuid
    return string.format('%s/%.0f', uuid, n)  -- whole numbers below 2^53: exact
end

-- The client's status generation as the manager carries it from a read to a put.
function M.gen_of(subject)
    forget_if_replicated()
    return token(current_n(box.space.rec_cache:get(subject)))
end

-- Right before box.commit(): the clients this transaction cleared take no put until M.release(held).
function M.hold()
    local held = cleared_now
    cleared_now = {}
    for _, subject in ipairs(held) do
        pending[subject] = (pending[subject] or 0) + 1
    end
    return held
end

-- When the commit is over, durable or rolled back.
function M.release(held)
    for _, subject in ipairs(held) do
        local left = pending[subject] - 1
        pending[subject] = left > 0 and left or nil
    end
end

-- Reads under way (client_read), subject -> set of watches. A read of a large client yields between steps
-- (aggregate.lua), and may see rows of a transaction still waiting for the WAL; should that write fail, the
-- rollback makes the gen taken before the read current again, and a put of an answer built from rows that
-- never were would pass. A clearing marks every watch of its client whether its transaction commits or not,
-- and such a read answers with a gen no put matches (M.UNSETTLED).
local watches = {}
M.UNSETTLED = 'unsettled'

function M.watch(subject)
    local watch = {cleared = false}
    local of_subject = watches[subject]
    if of_subject == nil then
        of_subject = {}
        watches[subject] = of_subject
    end
    of_subject[watch] = true
    return watch
end

-- True when the client was cleared while the watch was on.
function M.unwatch(subject, watch)
    local of_subject = watches[subject]
    if of_subject ~= nil then
        of_subject[watch] = nil
        if next(of_subject) == nil then
            watches[subject] = nil
        end
    end
    return watch.cleared
end

-- Clear the client's cached answer and give it a new gen: inside the caller's transaction (which ends with
-- counts.commit() or counts.rollback()). Outside one (an explicit clearing) it commits at once; a commit still
-- waiting for the WAL has already cleared the client.
function M.invalidate(subject, bucket_id)
    local of_subject = watches[subject]
    if of_subject ~= nil then
        for watch in pairs(of_subject) do
            watch.cleared = true
        end
    end
    if box.is_in_txn() then
        cleared_now[#cleared_now + 1] = subject
    elseif pending[subject] ~= nil then
        return
    end
    local t = box.space.rec_cache:get(subject)
    bucket_id = bucket_id or (t ~= nil and t[2]) or 0
    box.space.rec_cache:replace({subject, bucket_id, fiber.time() + M.MARKER_TTL, box.NULL, next_n()})
end

function M.cache_get(bucket_id, subject, now)
    local wrong = buckets.check_readable(bucket_id)
    if wrong ~= nil then
        return nil, wrong
    end
    if box.info.ro or not require('mastership').may_write() then
        return box.NULL  -- only the master's cache is ever served
    end
    forget_if_replicated()
    local t = box.space.rec_cache:get(subject)
    if t == nil or t[F_PAYLOAD] == nil or t[F_EXPIRES] <= (now or fiber.time())
        or (tonumber(t[F_GEN]) or 0) < valid_from then
        return box.NULL
    end
    return t[F_PAYLOAD]
end

-- Returns true when stored, false when refused because the client's status changed since `read_gen` was
-- read (or a change is still waiting for the WAL), it was read on another instance or before this instance's
-- cache last forgot, the read is older than MAX_READ_AGE, or this instance is read-only.
function M.cache_put(bucket_id, subject, expires_at, payload, read_gen, read_at)
    if type(subject) ~= 'string' or type(expires_at) ~= 'number' or type(read_gen) ~= 'string'
        or type(read_at) ~= 'number' then
        return nil, errors.new('BAD_ARGUMENT', 'cache_put(bucket_id, subject, expires_at, payload, read_gen, read_at)')
    end
    local wrong = buckets.check_writable({{bucket_id}}, 1, true)
    if wrong ~= nil then
        return nil, wrong
    end
    if box.info.ro or pending[subject] ~= nil then
        return false
    end
    forget_if_replicated()
    local n = current_n(box.space.rec_cache:get(subject))
    if fiber.time() - read_at > M.MAX_READ_AGE or token(n) ~= read_gen then
        return false
    end
    box.space.rec_cache:replace({subject, bucket_id, expires_at, payload, n})
    return true
end

function M.cache_invalidate(bucket_id, subject)
    local wrong = buckets.check_writable({{bucket_id}}, 1, true)
    if wrong ~= nil then
        return nil, wrong
    end
    M.invalidate(subject, bucket_id)
    return true
end

return M
