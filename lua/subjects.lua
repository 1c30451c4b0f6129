-- Listing subjects (for training) and the client x product interaction matrix (for ALS), page by page.
-- Both walk subject_counts (one tuple per subject) rather than the features space, and yield between
-- subjects every YIELD_EVERY so a full listing never stalls the instance.
local C = require('constants')
local fiber = require('fiber')

local M = {}

-- Subjects after `after` (exclusive), at most `limit`, in key order. Returns {subjects, next_after}.
function M.list_subjects(after, limit)
    limit = limit or 1000
    local key, iterator = {}, 'GE'
    if after ~= nil then
        key, iterator = {after}, 'GT'
    end
    local page = box.space.subject_counts:pairs(key, {iterator = iterator})
        :take_n(limit)
        :map(function(t) return t[1] end)
        :totable()
    return {subjects = page, next_after = page[#page] or box.NULL}
end

-- For a page of subjects: {subject, product, kind} with kind 'held' (latest product event is an opening)
-- or 'applied' (any application). Product and application events are few per client.
function M.interactions(after, limit)
    local listed = M.list_subjects(after, limit)
    local natural = box.space.features.index.natural
    local out = {}
    for i, subject in ipairs(listed.subjects) do
        local opened, closed = {}, {}
        for _, t in natural:pairs({subject, 'products'}, {iterator = 'EQ'}) do
            local product, action = t[C.F_NAME]:match('^product%.(.+)%.(%a+)$')
            if product ~= nil then
                local when = t[C.F_TIME_USE]
                local target = action == 'opened' and opened or closed
                if target[product] == nil or target[product] < when then
                    target[product] = when
                end
            end
        end
        for product, when in pairs(opened) do
            if closed[product] == nil or closed[product] < when then
                out[#out + 1] = {subject, product, 'held'}
            end
        end
        local applied = {}
        for _, t in natural:pairs({subject, 'applications'}, {iterator = 'EQ'}) do
            local product = t[C.F_NAME]:match('^app%.(.+)%.%a+$')
            if product ~= nil and not applied[product] then
                applied[product] = true
                out[#out + 1] = {subject, product, 'applied'}
            end
        end
        if i % C.YIELD_EVERY == 0 then
            fiber.yield()
        end
    end
    return {rows = out, next_after = listed.next_after}
end

return M
