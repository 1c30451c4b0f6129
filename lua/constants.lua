-- Constants shared by every storage module: field numbers, batch sizes, fiber periods.
-- Field numbers are used instead of names on hot paths (tuple[4] is cheaper than tuple.subject).
local M = {}

M.SPACE = 'features'

-- features tuple layout (layout 2; see schema.lua). The primary key is the natural key
-- (subject, name_id, object, source_id); names and sources are interned to small integers (dict.lua).
M.F_BUCKET_ID = 1
M.F_SUBJECT = 2
M.F_NAME = 3
M.F_OBJECT = 4
M.F_SOURCE = 5
M.F_VALUE = 6
M.F_TIME_USE = 7
M.F_EXPIRES_AT = 8

-- tombstones tuple: {subject, object, bucket_id, expires_at, source}; source is the scope of the deletion (nil:
-- every source; tombstones written before it had no fifth field and mean every source)
M.T_EXPIRES_AT = 4
M.T_SOURCE = 5

-- The store layout this code reads and writes (a store made by an older version is refused at start).
M.LAYOUT = 2

-- Row layout accepted by put/replace (what the Python client sends):
-- {bucket_id, subject, source, name, object, value, time_use, expires_at}
M.R_BUCKET_ID = 1
M.R_SUBJECT = 2
M.R_SOURCE = 3
M.R_NAME = 4
M.R_OBJECT = 5
M.R_VALUE = 6
M.R_TIME_USE = 7
M.R_EXPIRES_AT = 8

-- Long scans and bulk deletes yield after this many tuples so a "fat" subject cannot stall the instance.
M.YIELD_EVERY = 1000
-- Rows deleted per transaction by the expiry fiber and by bulk deletes.
M.DELETE_BATCH = 1000
-- Rows the expiry fiber looks at per step of its walk over the features (it yields between steps).
M.EXPIRY_SCAN_STEP = 2000
-- Default cap of stored features per subject (overridable from the instance config).
M.DEFAULT_MAX_FEATURES_PER_SUBJECT = 100000
-- Rows of what a client holds or applied for (cache.INVALIDATING_SOURCES) may go this far past the cap: a
-- client whose transactions filled it must still have an application or an opening stored, or answers would
-- offer him the product he just applied for (a few rows per application; a thousand is hundreds of them).
M.HOLDINGS_RESERVE = 1000
-- Distinct feature names a replica set interns for writes (bucket moves bring names already stored elsewhere and
-- are never refused). Deleting or correcting an object looks it up under every name, inside a transaction
-- that cannot yield: a producer spelling a new product or field on every event would make each of those cost
-- more without bound. The view, ten products and their statuses, categories and channels use a few hundred.
M.DEFAULT_MAX_NAMES = 2000
-- Names are never reclaimed: once a producer has used the budget up, a new product's statuses must still be
-- stored (answers learn from them what a client holds or applied for), so those sources get this many more.
M.HOLDINGS_NAMES_RESERVE = 500
-- Default raw read limit.
M.DEFAULT_READ_LIMIT = 10000
-- Expiry fiber period, seconds (overridable from the instance config).
M.DEFAULT_EXPIRY_INTERVAL = 60
-- Least time between two walks over the features for expired ones, seconds (overridable). A walk costs about
-- ~0.6 s of CPU per million stored features (`rtrec bench store`: expiry_walk); feature TTLs are days, and aggregates never count an
-- expired row anyway (aggregate.lua), so the walk only gives the memory back.
M.DEFAULT_FEATURE_SWEEP_INTERVAL = 3600
-- How long a deleted object's tombstone blocks late duplicates, seconds.
M.DEFAULT_TOMBSTONE_TTL = 500 * 24 * 3600  -- the client sends each tombstone's expiry; this is a fallback
-- Most times one `aggregate_at` call may ask for: every row read is folded into every time (training asks for
-- 15 cuts; 64 keep each step of the scan, aggregate.lua SCAN_STEP, to a few milliseconds).
M.AGGREGATE_MAX_TIMES = 64
-- Bucket export page size (records per call) when moving a bucket.
M.BUCKET_EXPORT_PAGE = 2000

-- LuaJIT GC: every tuple handed to Lua is a cdata with a finalizer, so an aggregate over 1,000 rows leaves
-- 1,000 of them behind. With the default pause (200) the collector runs in bursts that stalled aggregate
-- calls for 10-15 ms at p99; a pause of 100 (start the next cycle at once) and a step multiplier of 400
-- spread the same work into small steps (p99 2.5 ms Lua-side, measured; see docs/benchmarks.md).
M.GC_PAUSE = 100
M.GC_STEPMUL = 400

return M
