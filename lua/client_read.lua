-- What the recommendation manager reads of one client in one call: the aggregates it asks for (the feature
-- view plus the product-status facts), the client's status generation and the read time (for the
-- conditional cache put, see cache.lua), and, when asked, how fresh this copy is: a replica answering for a
-- slow or dead master must show that it is not behind (its vclock, and whether its replication works), or
-- the manager must not trust the holdings and applications it reports.
local aggregate = require('aggregate')
local cache = require('cache')
local fiber = require('fiber')

local M = {}

-- Replication as seen by this instance: how many upstreams it has, follows, and has stopped on an error, and
-- the largest delay (seconds) of the last row received from a followed peer.
local function replication_summary()
    local configured, following, stopped, max_lag = 0, 0, 0, 0
    for _, peer in pairs(box.info.replication) do
        local upstream = peer.upstream
        if upstream ~= nil then
            configured = configured + 1
            if upstream.status == 'follow' then
                following = following + 1
                if type(upstream.lag) == 'number' and upstream.lag > max_lag then
                    max_lag = upstream.lag
                end
            elseif upstream.status == 'stopped' then
                stopped = stopped + 1
            end
        end
    end
    return {configured = configured, following = following, stopped = stopped, max_lag = max_lag}
end

-- `with_cache`: a master with a cached answer for the client returns it instead of the aggregates
-- ({cached = answer, ...}): one round trip whether the cache hits or not. Replicas never answer from the cache
-- (theirs may lag behind a clearing on the master).
function M.client_read(bucket_id, subject, now, specs, with_freshness, with_cache)
    if with_cache and not box.info.ro then  -- cache_get also answers nothing on a deposed master
        local cached, wrong = cache.cache_get(bucket_id, subject, fiber.time())
        if wrong ~= nil then
            return nil, wrong
        end
        if type(cached) == 'table' then  -- a miss is box.NULL (which compares equal to nil)
            local gen = cache.gen_of(subject)
            return {cached = cached, values = {}, status_gen = gen, read_at = fiber.time(), ro = false}
        end
    end
    -- Taken before the read: a large client's read yields between steps (aggregate.lua SCAN_STEP), and a write
    -- landing meanwhile must find the answer older than itself: its generation changed (no cache put), its
    -- rows not counted in the vclock this copy claims. A clearing during the read makes the generation
    -- unsettled (cache.watch), for a write whose WAL write fails puts the generation back.
    -- `ro` always: an answer taken for the master's must come from a writable instance (a demoted master
    -- that a client still takes for the master answers read-only)
    local result = {status_gen = cache.gen_of(subject), read_at = fiber.time(), ro = box.info.ro}
    if with_freshness then
        local vclock = {}
        for id, lsn in pairs(box.info.vclock) do
            vclock[tostring(id)] = lsn  -- string keys: a sparse vclock must not turn into an array
        end
        result.vclock = vclock
        result.replication = replication_summary()
    end
    local watch = cache.watch(subject)
    local ok, values, err = pcall(aggregate.aggregate, bucket_id, subject, now, specs)
    local cleared = cache.unwatch(subject, watch)
    if not ok then
        error(values)
    elseif values == nil then
        return nil, err
    end
    if cleared then  -- cleared while it read: its answer must not be cached whatever that write's fate
        result.status_gen = cache.UNSETTLED
    end
    result.values = values
    result.ro = result.ro or box.info.ro  -- demoted while it read: not the master's answer
    return result
end

return M
