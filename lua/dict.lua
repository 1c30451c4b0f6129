-- Interned strings: feature names and sources are stored in the features space as small integers, which
-- makes every tuple smaller (the field report's store holds only current data in memory, so bytes per feature
-- decide how much fits). The `dictionary` space {kind, text, id} is replicated like any other space; each
-- replica set has its own ids (bucket moves carry texts, not ids).
--
-- Lookups go through a Lua cache. An id created inside a transaction is cached only once that transaction
-- commits: a rolled-back insert must not leave an id in the cache that no tuple of the space backs.
local M = {}

local cache = {name = {}, source = {}}      -- kind -> text -> id
local reverse = {name = {}, source = {}}    -- kind -> id -> text
local created = nil                         -- {kind, text, id} created by the running transaction

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
    if created == nil or created[kind .. '\0' .. text] == nil then
        cache[kind][text] = t[3]
    end
    return t[3]
end

-- The id of `text`, created in the caller's transaction when it is new.
function M.intern(kind, text)
    local id = M.find(kind, text)
    if id ~= nil then
        return id
    end
    local last = space().index.by_id:max({kind})
    id = (last ~= nil and last[1] == kind) and (last[3] + 1) or 1
    space():insert({kind, text, id})
    if created == nil then
        created = {}
        box.on_commit(function()
            for _, entry in pairs(created) do
                cache[entry[1]][entry[2]] = entry[3]
            end
            created = nil
        end)
        box.on_rollback(function() created = nil end)
    end
    created[kind .. '\0' .. text] = {kind, text, id}
    return id
end

-- The text of an id (reads only, outside transactions: a committed id never changes).
function M.text(kind, id)
    local text = reverse[kind][id]
    if text ~= nil then
        return text
    end
    local t = space().index.by_id:get({kind, id})
    if t == nil then
        return nil
    end
    reverse[kind][id] = t[2]
    return t[2]
end

-- Every id of a kind (delete_object walks the names a subject may have).
function M.ids(kind)
    return space().index.by_id:pairs({kind}):map(function(t) return t[3] end):totable()
end

return M
