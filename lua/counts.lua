-- Features per subject for the cap on "fat" subjects (put.lua), kept in subject_counts.
--
-- subject_counts is a temporary space: neither written to the WAL nor replicated. It caches the count of a
-- subject the first time the cap asks (a count of the subject's prefix of the primary index)
-- and follows the changes of the procedures from then on. A restart or a new master starts empty and
-- counts again on demand. Persisting it cost one replicated row per subject per batch: with a batch spread over
-- many clients, nearly a second write for every feature.
--
-- Every procedure that inserts or deletes features calls M.note(subject, delta); the deltas accumulate in
-- Lua memory and M.commit() applies them to the cached counts once per transaction, right before box.commit().
-- (A Lua trigger per row cut batched inserts from 118k to 30k rows/s on this machine, so procedures note
-- their changes explicitly.) Every procedure ends its transaction with M.commit() / M.rollback().
local M = {}

local pending = {}
-- Cached counts of an older generation are ignored (counted again): the generation changes whenever this
-- instance becomes writable, since while read-only it applied replicated writes without counting them.
local generation = 1

-- Forget every cached count (mastership.promote/demote).
function M.forget()
    generation = generation + 1
end

-- Apply a delta to a cached count; a subject not cached is counted afresh when the cap next asks.
local function adjust(subject, delta)
    local counts = box.space.subject_counts
    local row = counts:get(subject)
    if row == nil or row[3] ~= generation then
        return
    end
    if row[2] + delta <= 0 then
        counts:delete(subject)
    else
        counts:update(subject, {{'+', 2, delta}})
    end
end

-- Record that the current transaction added (delta > 0) or removed features of a subject.
function M.note(subject, delta)
    pending[subject] = (pending[subject] or 0) + delta
end

-- Write the accumulated deltas inside the current transaction.
function M.flush()
    for subject, delta in pairs(pending) do
        if delta ~= 0 then
            adjust(subject, delta)
        end
    end
    pending = {}
end

-- Commit the current transaction together with its subject count changes. The clients whose cached answers
-- it cleared take no cache put until the commit is over (cache.lua).
function M.commit()
    M.flush()
    local cache = require('cache')
    local held = cache.hold()
    local ok, err = pcall(box.commit)
    cache.release(held)
    if not ok then
        error(err)
    end
end

-- Roll back the current transaction and forget its count changes.
function M.rollback()
    pending = {}
    if box.is_in_txn() then
        box.rollback()
    end
    local cache = require('cache')
    cache.release(cache.hold())  -- forget the clearings too
end

-- Stored features of a subject, including changes of the current transaction.
function M.of(subject)
    local counts = box.space.subject_counts
    local row = counts:get(subject)
    local delta = pending[subject] or 0
    if row ~= nil and row[3] == generation then
        return row[2] + delta
    end
    -- the index already holds this transaction's changes, which `pending` also carries
    local stored = box.space.features.index.primary:count({subject}) - delta
    counts:replace({subject, stored, generation})
    return stored + delta
end

return M
