-- Keeps subject_counts in step with features through an on_replace trigger, so every path that adds or
-- removes a feature (put, replace, delete, expiry, bucket moves) is counted without each remembering to.
-- Changes applied by replication are skipped: the master's own subject_counts rows replicate as well.
local C = require('constants')

local M = {}

local function adjust(subject, delta)
    local counts = box.space.subject_counts
    local row = counts:get(subject)
    if row == nil then
        if delta > 0 then
            counts:insert({subject, delta})
        end
    elseif row[2] + delta <= 0 then
        counts:delete(subject)
    else
        counts:update(subject, {{'+', 2, delta}})
    end
end

local function on_features_replace(old, new)
    if box.session.type() == 'applier' then
        return
    end
    if old == nil and new ~= nil then
        adjust(new[C.F_SUBJECT], 1)
    elseif old ~= nil and new == nil then
        adjust(old[C.F_SUBJECT], -1)
    end
end

function M.install()
    local space = box.space.features
    for _, trigger in pairs(space:on_replace()) do
        space:on_replace(nil, trigger)
    end
    space:on_replace(on_features_replace)
end

function M.of(subject)
    local row = box.space.subject_counts:get(subject)
    return row and row[2] or 0
end

return M
