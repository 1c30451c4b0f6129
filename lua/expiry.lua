-- Background expiry: a named, cancellable fiber deletes features and tombstones whose expires_at has
-- passed, in batches of DELETE_BATCH per transaction, yielding between batches. Runs on the master only
-- (replicas receive the deletes by replication) and reports its status through stats().
local C = require('constants')
local counts = require('counts')
local config = require('config')
local fiber = require('fiber')
local log = require('log')

local M = {
    status = {runs = 0, deleted_features = 0, deleted_tombstones = 0, last_run_at = 0, last_error = box.NULL},
    fiber = nil,
}

-- Deletes up to DELETE_BATCH expired tuples of one space; returns how many were deleted.
local function expire_batch(space, now)
    local is_features = space.name == 'features'
    -- features, tombstones and rec_cache all have their expiry time indexed as `expires`
    local batch = space.index.expires:select({now}, {iterator = 'LE', limit = C.DELETE_BATCH})
    if #batch == 0 then
        return 0
    end
    box.begin()
    for _, t in ipairs(batch) do
        if space.name == 'rec_cache' then
            space:delete({t[1]})
        else
            -- features and tombstones have a two-part primary key made of their first two fields
            space:delete({t[1], t[2]})
        end
        if is_features then
            counts.note(t[C.F_SUBJECT], -1)
        end
    end
    counts.commit()
    return #batch
end

-- One pass: deletes everything expired as of `now`; returns counts.
function M.run_once(now)
    now = now or fiber.time()
    local totals = {features = 0, tombstones = 0, rec_cache = 0}
    for _, name in ipairs({'features', 'tombstones', 'rec_cache'}) do
        while true do
            local n = expire_batch(box.space[name], now)
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

local function expiry_f()
    fiber.self():name('rtrec.expiry')
    while true do
        fiber.testcancel()
        if not box.info.ro then
            local ok, err = pcall(M.run_once)
            if not ok then
                M.status.last_error = tostring(err)
                log.error('rtrec.expiry: %s', err)
            end
        end
        fiber.sleep(config.expiry_interval)
    end
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
