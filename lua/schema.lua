-- Creates the storage schema (idempotent). Runs on the master only; replicas receive it by replication.
--
-- features (layout 2): one flat feature per tuple
--   {bucket_id, subject, name_id, object, source_id, value, time_use, expires_at}
-- The primary key is the natural key (subject, name_id, object, source_id): every write is an idempotent upsert
-- on it (redeliveries and replays never double count), and a record keeps its identity when its bucket moves to
-- another replica set (the field report's collision lesson does not arise: there is no per-shard sequence).
-- Aggregation reads (subject, name_id) prefixes of the same index. The only other index is vshard's bucket_id.
-- Names and sources are interned (dict.lua); expiry walks the primary index (expiry.lua) instead of paying
-- for an index of its own on every write.
local C = require('constants')

local M = {}

local LAYOUT_KEY = 'layout'

-- Refuse a store made by an older version with a message that says what to do (called before anything is
-- created or written; the instance stops).
function M.check_layout()
    local features = box.space.features
    if features == nil then
        return
    end
    local meta = box.space.store_meta and box.space.store_meta:get(LAYOUT_KEY)
    local layout = meta and meta[2] or 1
    if layout ~= C.LAYOUT then
        error(string.format(
            'rtrec: this data directory (%s) holds the feature store in layout %d; this version reads layout %d ' ..
            'and does not convert it. Either run the previous version, or rebuild the store from the retained ' ..
            'Kafka log: `rtrec down`, move the run directory\'s store/ aside, `rtrec up`, then ' ..
            '`rtrec replay --from 1970-01-01 --to <now>` (see docs/operations.md, "Store layout upgrades")',
            box.cfg.work_dir, layout, C.LAYOUT), 0)
    end
end

local function create_features()
    local s = box.schema.space.create('features', {
        if_not_exists = true,
        format = {
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'subject', type = 'string'},
            {name = 'name_id', type = 'unsigned'},
            {name = 'object', type = 'string'},
            {name = 'source_id', type = 'unsigned'},
            {name = 'value', type = 'scalar'},
            {name = 'time_use', type = 'number'},
            {name = 'expires_at', type = 'number'},
        },
    })
    s:create_index('primary', {
        parts = {{2, 'string'}, {3, 'unsigned'}, {4, 'string'}, {5, 'unsigned'}}, if_not_exists = true,
    })
    -- vshard needs an index named bucket_id whose first part is bucket_id; the primary key parts after it let
    -- a bucket move page through a bucket (memtx indexes hold tuple pointers, so the parts cost no memory)
    s:create_index('bucket_id', {
        parts = {{1, 'unsigned'}, {2, 'string'}, {3, 'unsigned'}, {4, 'string'}, {5, 'unsigned'}},
        if_not_exists = true,
    })

    local d = box.schema.space.create('dictionary', {
        if_not_exists = true,
        format = {{name = 'kind', type = 'string'}, {name = 'text', type = 'string'}, {name = 'id', type = 'unsigned'}},
    })
    d:create_index('primary', {parts = {{1, 'string'}, {2, 'string'}}, if_not_exists = true})
    d:create_index('by_id', {parts = {{1, 'string'}, {3, 'unsigned'}}, if_not_exists = true})

    local meta = box.schema.space.create('store_meta', {
        if_not_exists = true, format = {{name = 'key', type = 'string'}, {name = 'value', type = 'any'}},
    })
    meta:create_index('primary', {parts = {{1, 'string'}}, if_not_exists = true})
    -- Per Kafka partition of a consumer group (`group/topic/partition`), the newest group generation that wrote
    -- here (put.lua's fence): a consumer that lost its partitions writes nothing after their next owner did.
    local fences = box.schema.space.create('fences', {
        if_not_exists = true,
        format = {{name = 'key', type = 'string'}, {name = 'generation', type = 'unsigned'}, {name = 'at', type = 'number'}},
    })
    fences:create_index('primary', {parts = {{1, 'string'}}, if_not_exists = true})
    if meta:get(LAYOUT_KEY) == nil then
        meta:replace({LAYOUT_KEY, C.LAYOUT})
    end
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

    -- A deleted object leaves a tombstone so a late duplicate cannot resurrect it.
    local t = box.schema.space.create('tombstones', {
        if_not_exists = true,
        format = {
            {name = 'subject', type = 'string'},
            {name = 'object', type = 'string'},
            {name = 'bucket_id', type = 'unsigned'},
            {name = 'expires_at', type = 'number'},
            {name = 'source', type = 'string', is_nullable = true},  -- nil: every source (constants.T_SOURCE)
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

    -- Feature count per subject for the cap on "fat" subjects (counts.lua): a temporary space (neither written
    -- to the WAL nor replicated) filled lazily from the primary index, so a write costs no extra replicated row.
    local c = box.schema.space.create('subject_counts', {
        if_not_exists = true,
        temporary = true,
        format = {
            {name = 'subject', type = 'string'},
            {name = 'count', type = 'unsigned'},
            {name = 'generation', type = 'unsigned'},
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

    -- Cached recommendation answers per client: temporary, each master's own (see cache.lua).
    local cache_format = {
        {name = 'subject', type = 'string'},
        {name = 'bucket_id', type = 'unsigned'},
        {name = 'expires_at', type = 'number'},
        {name = 'payload', type = 'any', is_nullable = true},
        {name = 'gen', type = 'unsigned', is_nullable = true},
    }
    if box.space.rec_cache ~= nil and not box.space.rec_cache.temporary then
        box.space.rec_cache:drop()  -- a store made when the cache was replicated: its answers are disposable
    end
    local r = box.schema.space.create('rec_cache', {if_not_exists = true, temporary = true, format = cache_format})
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
