-- Bucket ownership (vshard-compatible `_bucket` space) and the storage half of moving a bucket between
-- replica sets: start_send -> export pages -> import on the receiver -> activate there -> drop here.
-- A bucket accepts writes only while it is `active`, so a bucket in flight is never written in two places.
local C = require('constants')
local counts = require('counts')
local errors = require('errors')

local M = {}

M.ACTIVE = 'active'
M.SENDING = 'sending'
M.RECEIVING = 'receiving'

-- Returns nil when every row's bucket is writable here, else a WRONG_BUCKET error listing the others.
-- `column` is the position of bucket_id in each row.
function M.check_writable(rows, column)
    local space = box.space._bucket
    local wrong = nil
    for _, row in ipairs(rows) do
        local bucket_id = row[column]
        local b = space:get(bucket_id)
        if b == nil or b[2] ~= M.ACTIVE then
            wrong = wrong or {}
            wrong[#wrong + 1] = bucket_id
        end
    end
    if wrong ~= nil then
        return errors.new('WRONG_BUCKET', 'buckets are not writable on this replica set', {buckets = wrong})
    end
    return nil
end

function M.check_readable(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or (b[2] ~= M.ACTIVE and b[2] ~= M.SENDING) then
        return errors.new('WRONG_BUCKET', 'bucket is not readable on this replica set', {buckets = {bucket_id}})
    end
    return nil
end

-- Bootstrap: mark the given bucket ids active here (like vshard.router.bootstrap).
function M.assign(bucket_ids)
    box.begin()
    for _, id in ipairs(bucket_ids) do
        box.space._bucket:replace({id, M.ACTIVE, box.NULL})
    end
    counts.commit()
    return #bucket_ids
end

-- Buckets this replica set serves: active ones, and sending ones (still readable here while they move).
-- Returns {active = {...}, sending = {...}}; a client prefers an active owner.
function M.owned()
    local function ids(status)
        return box.space._bucket.index.status:pairs({status}):map(function(t) return t[1] end):totable()
    end
    return {active = ids(M.ACTIVE), sending = ids(M.SENDING)}
end

function M.topology_get()
    local t = box.space.cluster_topology:get('topology')
    return t and t[2] or box.NULL
end

function M.topology_set(topology)
    box.space.cluster_topology:replace({'topology', topology})
    return true
end

function M.start_send(bucket_id, destination)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or (b[2] ~= M.ACTIVE and b[2] ~= M.SENDING) then
        return nil, errors.new('BUCKET_STATE', 'bucket is not active here', {bucket_id = bucket_id})
    end
    box.space._bucket:replace({bucket_id, M.SENDING, tostring(destination)})
    return true
end

-- One page of a bucket's features after primary key `after` ({id, rs_id} or nil), plus on the first page
-- the bucket's tombstones and source versions (small).
function M.export(bucket_id, after, limit)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.SENDING then
        return nil, errors.new('BUCKET_STATE', 'bucket must be in sending state to export', {bucket_id = bucket_id})
    end
    limit = limit or C.BUCKET_EXPORT_PAGE
    -- The bucket_id index is non-unique with the primary key appended, so (bucket_id, id, rs_id) pages.
    local key = {bucket_id}
    local iterator = 'EQ'
    if after ~= nil then
        key = {bucket_id, after[1], after[2]}
        iterator = 'GT'
    end
    local page = {}
    for _, t in box.space.features.index.bucket_id:pairs(key, {iterator = iterator}) do
        if t[C.F_BUCKET_ID] ~= bucket_id or #page >= limit then
            break
        end
        page[#page + 1] = t
    end
    local extra = nil
    if after == nil then
        extra = {
            tombstones = box.space.tombstones.index.bucket_id:select({bucket_id}),
            versions = box.space.source_versions.index.bucket_id:select({bucket_id}),
            -- the clients' status generations travel along, so a cache put computed before the move is
            -- still refused after it when a status change came in between (see cache.lua)
            cache = box.space.rec_cache.index.bucket_id:select({bucket_id}),
        }
    end
    return {features = page, extra = extra}
end

-- Receiver side: insert exported tuples as they are (same composite primary key, so no collision).
function M.import(bucket_id, features, extra)
    local b = box.space._bucket:get(bucket_id)
    if b ~= nil and b[2] ~= M.RECEIVING then
        return nil, errors.new('BUCKET_STATE', 'bucket already present here', {bucket_id = bucket_id})
    end
    box.begin()
    if b == nil then
        box.space._bucket:insert({bucket_id, M.RECEIVING, box.NULL})
    end
    for _, t in ipairs(features) do
        -- a retried import may see its own earlier copy: count only new records
        if box.space.features:get({t[C.F_ID], t[C.F_RS_ID]}) == nil then
            counts.note(t[C.F_SUBJECT], 1)
        end
        box.space.features:replace(t)
    end
    if extra ~= nil then
        for _, t in ipairs(extra.tombstones or {}) do
            box.space.tombstones:replace(t)
        end
        for _, t in ipairs(extra.versions or {}) do
            box.space.source_versions:replace(t)
        end
        for _, t in ipairs(extra.cache or {}) do
            box.space.rec_cache:replace(t)
        end
    end
    counts.commit()
    return #features
end

function M.activate(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.RECEIVING then
        return nil, errors.new('BUCKET_STATE', 'bucket is not receiving here', {bucket_id = bucket_id})
    end
    box.space._bucket:replace({bucket_id, M.ACTIVE, box.NULL})
    return true
end

-- Delete every record of a bucket here (features, tombstones, source versions, cached answers) in batches
-- that yield, then forget the bucket.
local function delete_bucket_records(bucket_id)
    local deleted = 0
    for _, space_name in ipairs({'features', 'tombstones', 'source_versions', 'rec_cache'}) do
        local space = box.space[space_name]
        while true do
            local batch = space.index.bucket_id:select({bucket_id}, {limit = C.DELETE_BATCH})
            if #batch == 0 then
                break
            end
            box.begin()
            for _, t in ipairs(batch) do
                if space_name == 'rec_cache' then
                    space:delete({t[1]})
                else
                    -- features, tombstones and source_versions have a two-part primary key of their first fields
                    space:delete({t[1], t[2]})
                end
                if space_name == 'features' then
                    counts.note(t[C.F_SUBJECT], -1)
                end
            end
            counts.commit()
            deleted = deleted + #batch
            require('fiber').yield()
        end
    end
    box.space._bucket:delete(bucket_id)
    return deleted
end

-- The sender's last step, once the receiver activated the bucket.
function M.drop(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.SENDING then
        return nil, errors.new('BUCKET_STATE', 'only a sending bucket can be dropped', {bucket_id = bucket_id})
    end
    return delete_bucket_records(bucket_id)
end

-- ---- recovering an interrupted move (`rtrec reshard --recover`) ------------------------------------------

-- The sender takes the bucket back: it serves writes again. Only while the receiver never activated it.
function M.cancel_send(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.SENDING then
        return nil, errors.new('BUCKET_STATE', 'only a sending bucket can be taken back', {bucket_id = bucket_id})
    end
    box.space._bucket:replace({bucket_id, M.ACTIVE, box.NULL})
    return true
end

-- The receiver throws away a partial copy.
function M.discard(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil then
        return 0
    end
    if b[2] ~= M.RECEIVING then
        return nil, errors.new('BUCKET_STATE', 'only a receiving bucket can be discarded', {bucket_id = bucket_id})
    end
    return delete_bucket_records(bucket_id)
end

-- Buckets in flight here: {sending = {{bucket_id, destination}, ...}, receiving = {bucket_id, ...}}.
function M.transfers()
    local sending = box.space._bucket.index.status:pairs({M.SENDING})
        :map(function(t) return {t[1], tonumber(t[3])} end):totable()
    local receiving = box.space._bucket.index.status:pairs({M.RECEIVING})
        :map(function(t) return t[1] end):totable()
    return {sending = sending, receiving = receiving}
end

-- The state of one bucket here ('active', 'sending', 'receiving') or null.
function M.state(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    return b ~= nil and b[2] or box.NULL
end

return M
