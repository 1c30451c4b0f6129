-- Recommendation cache (Tarantool serves as the recommendation cache, as in the field report).
-- One tuple per client: {subject, bucket_id, expires_at, payload, gen}.
--
-- `gen` counts the client's status changes. Any write of an application or product event for the client,
-- or a client-data replace, bumps it in the same transaction and clears the payload (the tuple stays as a
-- short-lived marker holding the new gen), so the next answer is computed fresh and an applied-for product
-- disappears at once ("no failed recommendations").
--
-- A put is conditional: the manager passes the gen and the time of the read its answer was computed from,
-- and the put is refused when the gen moved since (a status change landed between the read and the put) or
-- the read is older than MAX_READ_AGE (a put delayed by a stalled master). Without this an answer read just
-- before an application and written just after it would be served from the cache with the applied product.
local errors = require('errors')
local buckets = require('buckets')
local fiber = require('fiber')

local M = {}

-- Sources whose events change what may be recommended.
M.INVALIDATING_SOURCES = {applications = true, products = true}
-- A cleared entry keeps its gen at least this long (seconds), well past MAX_READ_AGE.
M.MARKER_TTL = 60
-- A put computed from a read older than this (seconds, by this instance's clock) is refused.
M.MAX_READ_AGE = 2

local F_EXPIRES, F_PAYLOAD, F_GEN = 3, 4, 5

-- The client's status generation (0 when nothing is recorded).
function M.gen_of(subject)
    local t = box.space.rec_cache:get(subject)
    return t ~= nil and (t[F_GEN] or 0) or 0
end

-- Inside the caller's transaction: clear the client's cached answer and bump its gen.
function M.invalidate(subject, bucket_id)
    local t = box.space.rec_cache:get(subject)
    local gen = (t ~= nil and (t[F_GEN] or 0) or 0) + 1
    bucket_id = bucket_id or (t ~= nil and t[2]) or 0
    box.space.rec_cache:replace({subject, bucket_id, fiber.time() + M.MARKER_TTL, box.NULL, gen})
end

function M.cache_get(bucket_id, subject, now)
    local wrong = buckets.check_readable(bucket_id)
    if wrong ~= nil then
        return nil, wrong
    end
    local t = box.space.rec_cache:get(subject)
    if t == nil or t[F_PAYLOAD] == nil or t[F_EXPIRES] <= (now or fiber.time()) then
        return box.NULL
    end
    return t[F_PAYLOAD]
end

-- Returns true when stored, false when refused because the client's status changed since `read_gen` was
-- read or the read is older than MAX_READ_AGE.
function M.cache_put(bucket_id, subject, expires_at, payload, read_gen, read_at)
    if type(subject) ~= 'string' or type(expires_at) ~= 'number' or type(read_gen) ~= 'number'
        or type(read_at) ~= 'number' then
        return nil, errors.new('BAD_ARGUMENT', 'cache_put(bucket_id, subject, expires_at, payload, read_gen, read_at)')
    end
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    if fiber.time() - read_at > M.MAX_READ_AGE or M.gen_of(subject) ~= read_gen then
        return false
    end
    box.space.rec_cache:replace({subject, bucket_id, expires_at, payload, read_gen})
    return true
end

function M.cache_invalidate(bucket_id, subject)
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    M.invalidate(subject, bucket_id)
    return true
end

return M
