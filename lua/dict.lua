-- Interned strings: feature names and sources are stored in the features space as small integers, which
-- makes every tuple smaller (the field report's store holds only current data in memory, so bytes per feature
-- decide how much fits). The `dictionary` space {kind, text, id} is replicated like any other space; each
-- replica set has its own ids (bucket moves carry texts, not ids).
--
-- Lookups go through a Lua cache that holds committed entries only. A transaction that creates entries
-- registers its own commit and rollback triggers (triggers belong to one transaction): its entries are
-- cached when it commits and forgotten when it rolls back. Until then they are "pending": another fiber may
-- read them from the space (memtx shows uncommitted tuples) but never caches them, so a rolled-back id can
-- never be served from the cache nor handed to two texts.
local M = {}

local cache = {name = {}, source = {}}      -- kind -> text -> id (committed)
local reverse = {name = {}, source = {}}    -- kind -> id -> text (committed)
local pending_text = {name = {}, source = {}}  -- kind -> text -> true while its creating transaction runs
local pending_id = {name = {}, source = {}}    -- kind -> id -> true likewise

local function space()
    return box.space.dictionary
end

-- The id of `text`, or nil when it was never stored (reads: a name no feature ever had).
function M.find(kind, text)
    local id = cache[kind][text]
    if id ~= nil then
        return id
    end
    local t = space():get({kind, text})
    if t == nil then
        return nil
    end
    if not pending_text[kind][text] then
        cache[kind][text] = t[3]
    end
    return t[3]
end

-- Called once per transaction that creates entries: settle them when it ends, whichever way.
local function settle_on_end(entries)
    local function forget()
        for _, e in ipairs(entries) do
            pending_text[e[1]][e[2]] = nil
            pending_id[e[1]][e[3]] = nil
        end
    end
    box.on_commit(function()
        forget()
        for _, e in ipairs(entries) do
            cache[e[1]][e[2]] = e[3]
        end
    end)
    box.on_rollback(forget)
end

-- The running transactions' new entries {kind, text, id}, by fiber (a fiber runs one transaction at a time;
-- Tarantool 2.6 has no transaction id).
local created_by_txn = {}

-- The id of `text`, created in the caller's transaction when it is new; nil when it is new and `limit` (if
-- given) entries of its kind exist already (ids count up from 1 and are never reused).
function M.intern(kind, text, limit)
    local id = M.find(kind, text)
    if id ~= nil then
        return id
    end
    local last = space().index.by_id:max({kind})
    id = (last ~= nil and last[1] == kind) and (last[3] + 1) or 1
    if limit ~= nil and id > limit then
        return nil
    end
    space():insert({kind, text, id})
    local txn = require('fiber').id()
    local entries = created_by_txn[txn]
    if entries == nil then
        entries = {}
        created_by_txn[txn] = entries
        settle_on_end(entries)
        local function drop() created_by_txn[txn] = nil end
        box.on_commit(drop)
        box.on_rollback(drop)
    end
    entries[#entries + 1] = {kind, text, id}
    pending_text[kind][text] = true
    pending_id[kind][id] = true
    return id
end

-- The text of an id (a committed id never changes).
function M.text(kind, id)
    local text = reverse[kind][id]
    if text ~= nil then
        return text
    end
    local t = space().index.by_id:get({kind, id})
    if t == nil then
        return nil
    end
    if not pending_id[kind][id] then
        reverse[kind][id] = t[2]
    end
    return t[2]
end

-- Every id of a kind (delete_object walks the names a subject may have).
function M.ids(kind)
    return space().index.by_id:pairs({kind}):map(function(t) return t[3] end):totable()
end

return M
