-- Background expiry: a named, cancellable fiber deletes features and tombstones whose expires_at has
-- passed, in batches per transaction, yielding between batches. Runs on the master only (replicas receive
-- the deletes by replication) and reports its status through stats().
--
-- Features have no index on expires_at (one more index would be written for every feature on three copies):
-- a walk over the primary index in steps of EXPIRY_SCAN_STEP tuples, yielding between steps, runs at most once
-- per `feature_sweep_interval` (an hour by default; reads never count expired rows, so the walk only frees
-- memory). Tombstones and cached answers are few, keep their `expires` index and go every pass.
local C = require('constants')
local counts = require('counts')
local config = require('config')
local fiber = require('fiber')
local log = require('log')

local M = {
    status = {
        runs = 0, deleted_features = 0, deleted_tombstones = 0, last_run_at = 0, last_feature_sweep_at = 0,
        last_error = box.NULL, last_error_at = box.NULL, failures = 0,
    },
    fiber = nil,
}

-- Deletes up to DELETE_BATCH expired tuples of a space with an `expires` index (tombstones, rec_cache).
local function expire_batch(space, now)
    local batch = space.index.expires:select({now}, {iterator = 'LE', limit = C.DELETE_BATCH})
    if #batch == 0 then
        return 0
    end
    box.begin()
    for _, t in ipairs(batch) do
        if space.name == 'rec_cache' then
            space:delete({t[1]})
        else
            space:delete({t[1], t[2]})  -- tombstones: (subject, object)
        end
    end
    box.commit()
    return #batch
end

-- One step of the walk over the features after primary key `after` (nil: from the start): deletes the expired
-- ones; returns how many were deleted and the key to continue after (nil at the end).
local function expire_features_step(after, now)
    local features = box.space.features
    local key, iterator = {}, 'GE'
    if after ~= nil then
        key, iterator = after, 'GT'
    end
    local step = features.index.primary:select(key, {iterator = iterator, limit = C.EXPIRY_SCAN_STEP})
    if #step == 0 then
        return 0, nil
    end
    local doomed = {}
    for _, t in ipairs(step) do
        if t[C.F_EXPIRES_AT] <= now then
            doomed[#doomed + 1] = t
        end
    end
    if #doomed > 0 then
        box.begin()
        for _, t in ipairs(doomed) do
            features:delete({t[C.F_SUBJECT], t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]})
            counts.note(t[C.F_SUBJECT], -1)
        end
        counts.commit()
    end
    local last = step[#step]
    local next_key = {last[C.F_SUBJECT], last[C.F_NAME], last[C.F_OBJECT], last[C.F_SOURCE]}
    if #step < C.EXPIRY_SCAN_STEP then
        return #doomed, nil
    end
    return #doomed, next_key
end

-- One pass: deletes expired tombstones and cached answers, and the expired features when the last walk over
-- them is at least `feature_sweep_interval` old (always when `sweep_features` is true: `expire_now`).
function M.run_once(now, sweep_features)
    now = now or fiber.time()
    local totals = {features = 0, tombstones = 0, rec_cache = 0}
    if sweep_features or now - M.status.last_feature_sweep_at >= config.feature_sweep_interval then
        local after = nil
        repeat
            local deleted
            deleted, after = expire_features_step(after, now)
            totals.features = totals.features + deleted
            fiber.yield()
        until after == nil
        M.status.last_feature_sweep_at = now
    end
    for _, name in ipairs({'tombstones', 'rec_cache'}) do
        -- a cache row outlives its answer by the longest read age a put may carry: deleting it returns the
        -- client to the oldest gen, which a put from a read older than the row could otherwise match again
        local before = name == 'rec_cache' and now - require('cache').MAX_READ_AGE or now
        while true do
            local n = expire_batch(box.space[name], before)
            totals[name] = totals[name] + n
            if n < C.DELETE_BATCH then
                break
            end
            fiber.yield()
        end
    end
    M.status.runs = M.status.runs + 1
    M.status.deleted_features = M.status.deleted_features + totals.features
    M.status.deleted_tombstones = M.status.deleted_tombstones + totals.tombstones
    M.status.last_run_at = now
    return totals
end

-- A pass that failed inside a transaction (a demotion between steps: read-only; out of memory on a count) must
-- not leave it open: the next box.begin() would fail with "active transaction" on every pass, for good.
local function after_failure(err)
    if box.is_in_txn() then
        box.rollback()
    end
    counts.rollback()
    M.status.failures = M.status.failures + 1
    M.status.last_error = tostring(err)
    M.status.last_error_at = fiber.time()
    log.error('rtrec.expiry: %s', err)
end

-- One pass as the fiber runs it: a failure is counted and reported, never left behind.
function M.pass(sweep_features)
    local ok, err = pcall(M.run_once, nil, sweep_features)
    if not ok then
        after_failure(err)
    end
    return ok
end

local function expiry_f()
    fiber.self():name('rtrec.expiry')
    while true do
        fiber.testcancel()
        if not box.info.ro then
            M.pass(nil)
        end
        fiber.sleep(config.expiry_interval)
    end
end

-- What `rtrec status` reads: the counters, whether the fiber lives, and how often it should run.
function M.report()
    local report = table.deepcopy(M.status)
    report.running = M.fiber ~= nil and M.fiber:status() ~= 'dead'
    report.interval = config.expiry_interval
    return report
end

function M.start()
    M.stop()
    M.fiber = fiber.create(expiry_f)
end

function M.stop()
    if M.fiber ~= nil and M.fiber:status() ~= 'dead' then
        M.fiber:cancel()
    end
    M.fiber = nil
end

return M
