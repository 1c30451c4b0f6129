-- Deletes: one object's features (a transaction deletion, with a tombstone) and a whole subject
-- (the ops tool for a "fat" subject: batched, yielding, so Lua memory and the tx thread stay healthy).
local C = require('constants')
local counts = require('counts')
local errors = require('errors')
local config = require('config')
local buckets = require('buckets')
local fiber = require('fiber')
local dict = require('dict')

local M = {}

-- Primary keys of the subject's features whose object is `object`, of one source (source_id) or of every source
-- (nil): one (subject, name_id, object) prefix lookup per interned name (there are tens of them).
function M.object_feature_keys(subject, object, source_id)
    local features = box.space.features
    local keys = {}
    for _, name_id in ipairs(dict.ids('name')) do
        for _, t in features:pairs({subject, name_id, object}, {iterator = 'EQ'}) do
            if source_id == nil or t[C.F_SOURCE] == source_id then
                keys[#keys + 1] = {subject, name_id, object, t[C.F_SOURCE]}
            end
        end
    end
    return keys
end

-- The tombstone's scope: a source name, or box.NULL for every source. A second delete of the same object from
-- another source widens it to every source (the safe side: a skipped row is counted, a resurrected one is not).
local function tombstone_scope(subject, object, source)
    local existing = box.space.tombstones:get({subject, object})
    if existing == nil or existing[C.T_SOURCE] == source then
        return source
    end
    return box.NULL
end

-- Whether a row of `source` for (subject, object) is tombstoned.
function M.tombstoned(subject, object, source)
    local t = box.space.tombstones:get({subject, object})
    return t ~= nil and (t[C.T_SOURCE] == nil or t[C.T_SOURCE] == source)
end

-- Deletes the features of one object, of one source when `source` is given (a transaction deletion must not
-- touch a profile or an application that happens to share the id), else of every source, and leaves a
-- tombstone of the same scope. Returns {deleted = n}. The tombstone lives until tombstone_expires_at
-- (defaults to now + tombstone_ttl).
function M.delete_object(bucket_id, subject, object, tombstone_expires_at, source)
    if type(subject) ~= 'string' or type(object) ~= 'string' then
        return nil, errors.new('BAD_ARGUMENT', 'subject and object must be strings')
    end
    if source == box.NULL then
        source = nil
    end
    if source ~= nil and type(source) ~= 'string' then
        return nil, errors.new('BAD_ARGUMENT', 'source must be a string')
    end
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    tombstone_expires_at = tombstone_expires_at or (fiber.time() + config.tombstone_ttl)
    local source_id = box.NULL
    if source ~= nil then
        source_id = dict.find('source', source)
    end
    local keys = {}
    if source == nil or source_id ~= nil then  -- a source never stored has no rows
        keys = M.object_feature_keys(subject, object, source_id)
    end
    box.begin()
    for _, pk in ipairs(keys) do
        box.space.features:delete(pk)
    end
    counts.note(subject, -#keys)
    local scope = tombstone_scope(subject, object, source == nil and box.NULL or source)
    local earlier = box.space.tombstones:get({subject, object})
    if earlier ~= nil and earlier[C.T_EXPIRES_AT] > tombstone_expires_at then
        -- a tombstone widened to every source keeps blocking as long as its longest-lived source asked for
        tombstone_expires_at = earlier[C.T_EXPIRES_AT]
    end
    box.space.tombstones:replace({subject, object, bucket_id, tombstone_expires_at, scope})
    if #keys > 0 then
        -- a reversed opening or closing changes what the client holds: the cached answer may no longer hold
        require('cache').invalidate(subject, bucket_id)
    end
    counts.commit()
    return {deleted = #keys}
end

-- Deletes every feature of a subject in batches of DELETE_BATCH, yielding between them.
function M.purge_subject(bucket_id, subject)
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    local features = box.space.features
    local deleted = 0
    while true do
        local batch = features:select({subject}, {iterator = 'EQ', limit = C.DELETE_BATCH})
        if #batch == 0 then
            break
        end
        box.begin()
        for _, t in ipairs(batch) do
            features:delete({subject, t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]})
        end
        counts.note(subject, -#batch)
        counts.commit()
        deleted = deleted + #batch
        fiber.yield()
    end
    require('cache').invalidate(subject, bucket_id)  -- nothing is known of the subject any more
    return {deleted = deleted}
end

return M
