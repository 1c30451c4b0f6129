-- Creates the storage schema (idempotent). Runs on the master only; replicas receive it by replication.
--
-- features: one flat feature per tuple. The primary key is (id, rs_id): a per-shard sequence plus the
-- replica set id, so records keep their identity when their bucket moves to another replica set (the field
-- report's lesson: a sequence alone collided after rebalancing).
local M = {}

local function create_features()
    local s = box.schema.space.create('features', {
        if_not_exists = true,
        format = {
            {name = 'id', type = 'unsigned'},
            {name = 'rs_id', type = 'unsigned'},
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'subject', type = 'string'},
            {name = 'source', type = 'string'},
            {name = 'name', type = 'string'},
            {name = 'object', type = 'string'},
            {name = 'value', type = 'scalar'},
            {name = 'time_use', type = 'number'},
            {name = 'expires_at', type = 'number'},
        },
    })
    s:create_index('primary', {parts = {{1, 'unsigned'}, {2, 'unsigned'}}, if_not_exists = true})
    s:create_index('subject_time', {
        parts = {{4, 'string'}, {9, 'number'}}, unique = false, if_not_exists = true,
    })
    -- Aggregation reads one feature name of one subject in a time range: this index makes each spec a
    -- range scan over only the matching rows instead of the subject's whole history.
    s:create_index('subject_name_time', {
        parts = {{4, 'string'}, {6, 'string'}, {9, 'number'}}, unique = false, if_not_exists = true,
    })
    -- vshard needs an index named bucket_id whose first part is bucket_id; the primary key parts after it
    -- let a bucket move page through its records.
    s:create_index('bucket_id', {
        parts = {{3, 'unsigned'}, {1, 'unsigned'}, {2, 'unsigned'}}, if_not_exists = true,
    })
    -- Natural key: every write is an idempotent upsert on it (redeliveries and replays never double count).
    s:create_index('natural', {
        parts = {{4, 'string'}, {5, 'string'}, {7, 'string'}, {6, 'string'}}, if_not_exists = true,
    })
    s:create_index('expires', {parts = {{10, 'number'}}, unique = false, if_not_exists = true})
    box.schema.sequence.create('features_id', {if_not_exists = true})
end

local function create_support_spaces()
    -- vshard-compatible bucket table: which buckets this replica set owns and in what state.
    local b = box.schema.space.create('_bucket', {
        if_not_exists = true,
        format = {
            {name = 'id', type = 'unsigned'},
            {name = 'status', type = 'string'},
            {name = 'destination', type = 'string', is_nullable = true},
        },
    })
    b:create_index('pk', {parts = {{1, 'unsigned'}}, if_not_exists = true})
    b:create_index('status', {parts = {{2, 'string'}}, unique = false, if_not_exists = true})

    -- A deleted transaction leaves a tombstone so a late duplicate cannot resurrect it.
    local t = box.schema.space.create('tombstones', {
        if_not_exists = true,
        format = {
            {name = 'subject', type = 'string'},
            {name = 'object', type = 'string'},
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'expires_at', type = 'number'},
        },
    })
    t:create_index('primary', {parts = {{1, 'string'}, {2, 'string'}}, if_not_exists = true})
    t:create_index('bucket_id', {parts = {{3, 'unsigned'}}, unique = false, if_not_exists = true})
    t:create_index('expires', {parts = {{4, 'number'}}, unique = false, if_not_exists = true})

    -- The version (event time) of the last client-data replace per subject and source: "newest wins".
    local v = box.schema.space.create('source_versions', {
        if_not_exists = true,
        format = {
            {name = 'subject', type = 'string'},
            {name = 'source', type = 'string'},
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'version', type = 'number'},
        },
    })
    v:create_index('primary', {parts = {{1, 'string'}, {2, 'string'}}, if_not_exists = true})
    v:create_index('bucket_id', {parts = {{3, 'unsigned'}}, unique = false, if_not_exists = true})

    -- Feature count per subject, kept by a trigger on features; the cap on "fat" subjects reads it.
    local c = box.schema.space.create('subject_counts', {
        if_not_exists = true,
        format = {
            {name = 'subject', type = 'string'},
            {name = 'count', type = 'unsigned'},
        },
    })
    c:create_index('primary', {parts = {{1, 'string'}}, if_not_exists = true})

    -- The cluster's replica sets as the reshard tool last wrote them: clients learn new replica sets here.
    local topo = box.schema.space.create('cluster_topology', {
        if_not_exists = true,
        format = {{name = 'key', type = 'string'}, {name = 'value', type = 'any'}},
    })
    topo:create_index('primary', {parts = {{1, 'string'}}, if_not_exists = true})

    -- Moves activated on this replica set (by move id): a later `rtrec reshard --recover` can tell a move that
    -- completed (and perhaps moved on since) from one that never arrived.
    local m = box.schema.space.create('bucket_moves', {
        if_not_exists = true,
        format = {
            {name = 'move_id', type = 'string'},
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'activated_at', type = 'number'},
        },
    })
    m:create_index('primary', {parts = {{1, 'string'}}, if_not_exists = true})

    -- Cached recommendation answers per client (see cache.lua).
    local cache_format = {
        {name = 'subject', type = 'string'},
        {name = 'bucket_id', type = 'unsigned'},
        {name = 'expires_at', type = 'number'},
        {name = 'payload', type = 'any', is_nullable = true},
        {name = 'gen', type = 'unsigned', is_nullable = true},
    }
    local r = box.schema.space.create('rec_cache', {if_not_exists = true, format = cache_format})
    if #r:format() < #cache_format then
        r:format(cache_format)  -- a store made before status generations: the new fields are nullable
    end
    r:create_index('primary', {parts = {{1, 'string'}}, if_not_exists = true})
    r:create_index('bucket_id', {parts = {{2, 'unsigned'}}, unique = false, if_not_exists = true})
    r:create_index('expires', {parts = {{3, 'number'}}, unique = false, if_not_exists = true})
end

function M.create(user, password)
    create_features()
    create_support_spaces()
    if not box.schema.user.exists(user) then
        box.schema.user.create(user, {password = password})
    else
        box.schema.user.passwd(user, password)
    end
    box.schema.user.grant(user, 'read,write,execute,create,alter,drop', 'universe', nil, {if_not_exists = true})
    box.schema.user.grant(user, 'replication', nil, nil, {if_not_exists = true})
end

return M
