-- Recommendation cache (Tarantool serves as the recommendation cache, as in the field report).
-- One tuple per client: {subject, bucket_id, expires_at, payload}. Any write of an application or product
-- event for the client, or a client-data replace, deletes the client's entry in the same transaction, so
-- the next answer is computed fresh and an applied-for product disappears at once ("no failed
-- recommendations"). Expired entries are removed by the expiry fiber.
local errors = require('errors')
local buckets = require('buckets')
local fiber = require('fiber')

local M = {}

-- Sources whose events change what may be recommended.
M.INVALIDATING_SOURCES = {applications = true, products = true}

function M.invalidate(subject)
    box.space.rec_cache:delete(subject)
end

function M.cache_get(bucket_id, subject, now)
    local wrong = buckets.check_readable(bucket_id)
    if wrong ~= nil then
        return nil, wrong
    end
    local t = box.space.rec_cache:get(subject)
    if t == nil or t[3] <= (now or fiber.time()) then
        return box.NULL
    end
    return t[4]
end

function M.cache_put(bucket_id, subject, expires_at, payload)
    if type(subject) ~= 'string' or type(expires_at) ~= 'number' then
        return nil, errors.new('BAD_ARGUMENT', 'cache_put(bucket_id, subject, expires_at, payload)')
    end
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    box.space.rec_cache:replace({subject, bucket_id, expires_at, payload})
    return true
end

function M.cache_invalidate(bucket_id, subject)
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    M.invalidate(subject)
    return true
end

return M
