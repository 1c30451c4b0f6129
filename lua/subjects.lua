-- Listing subjects (for training) and the client x product interaction matrix (for ALS), page by page.
-- Both skip through the features' primary index (subject first) one subject at a time: a GT search on the
-- subject alone lands on the next subject's first row, so a page costs a tree search per subject whatever the
-- subjects hold. They yield every YIELD_EVERY subjects so a full listing never stalls the instance. A subject
-- whose rows have all expired is listed until the expiry sweep removes them (its reads are empty meanwhile).
local C = require('constants')
local fiber = require('fiber')
local buckets = require('buckets')

local M = {}

-- Whether this replica set owns the subject's bucket (active, or still sending it away): a copy being received,
-- a sent one awaiting its drop or a rolled-back move's leftovers are another replica set's, and listing them
-- gave a client twice (double weight in training) or a partial one.
local function owned_here(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    return b ~= nil and (b[2] == buckets.ACTIVE or b[2] == buckets.SENDING)
end

-- Subjects after `after` (exclusive), at most `limit`, in key order, of buckets owned here. Returns
-- {subjects, next_after}: next_after is the last subject looked at (owned or not), nil at the end.
function M.list_subjects(after, limit)
    limit = limit or 1000
    local primary = box.space.features.index.primary
    local page = {}
    local t
    if after == nil then
        t = primary:min()
    else
        t = primary:select({after}, {iterator = 'GT', limit = 1})[1]
    end
    local last, seen = nil, 0
    while t ~= nil and #page < limit do
        local subject = t[C.F_SUBJECT]
        if owned_here(t[C.F_BUCKET_ID]) then
            page[#page + 1] = subject
        end
        last, seen = subject, seen + 1
        t = primary:select({subject}, {iterator = 'GT', limit = 1})[1]
        if seen % C.YIELD_EVERY == 0 then
            fiber.yield()
        end
    end
    if t == nil then
        last = nil
    end
    return {subjects = page, next_after = last or box.NULL}
end

-- For a page of subjects: {subject, product, kind} with kind 'held' (as the serving filter: more openings than
-- closings, or no closing after the last opening)
-- or 'applied' (any application). Product and application events are few per client.
-- Name ids of product and application features, with what they say: {name_id, product, kind, action}.
local function status_names()
    local found = {}
    for _, t in box.space.dictionary:pairs({'name'}, {iterator = 'EQ'}) do
        local product, action = t[2]:match('^product%.(.+)%.(%a+)$')
        if product ~= nil then
            found[#found + 1] = {t[3], product, 'product', action}
        else
            product = t[2]:match('^app%.(.+)%.%a+$')
            if product ~= nil then
                found[#found + 1] = {t[3], product, 'application'}
            end
        end
    end
    return found
end

function M.interactions(after, limit)
    local listed = M.list_subjects(after, limit)
    local features = box.space.features
    local names = status_names()
    local now = fiber.time()
    local out = {}
    for i, subject in ipairs(listed.subjects) do
        local opened, closed, applied, openings, closings = {}, {}, {}, {}, {}
        for _, entry in ipairs(names) do
            local name_id, product, kind = entry[1], entry[2], entry[3]
            for _, t in features:pairs({subject, name_id}, {iterator = 'EQ'}) do
                if t[C.F_EXPIRES_AT] <= now then  -- luacheck: ignore
                    -- expired: it waits for the sweep and is never read
                elseif kind == 'application' then
                    applied[product] = true
                else
                    local when = t[C.F_TIME_USE]
                    local target = entry[4] == 'opened' and opened or closed
                    local counts = entry[4] == 'opened' and openings or closings
                    if target[product] == nil or target[product] < when then
                        target[product] = when
                    end
                    counts[product] = (counts[product] or 0) + 1
                end
            end
        end
        for product in pairs(applied) do
            out[#out + 1] = {subject, product, 'applied'}
        end
        for product, when in pairs(opened) do
            -- as the serving filter (recommenders/profile.py `holds`): more openings than closings (a card
            -- reissued), or no closing after the last opening (a tie is held)
            if openings[product] > (closings[product] or 0) or closed[product] == nil or closed[product] <= when then
                out[#out + 1] = {subject, product, 'held'}
            end
        end
        if i % C.YIELD_EVERY == 0 then
            fiber.yield()
        end
    end
    return {rows = out, next_after = listed.next_after}
end

return M
