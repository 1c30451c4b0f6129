-- Aggregation on demand: a list of specs computed in one call at a given `now` (point-in-time correct).
--
-- A spec is {fn, name, window_seconds} with fn in sum|count|min|max|avg|last and window 0 meaning
-- "all history". A window covers now - window < time_use <= now. Specs are grouped by feature name and
-- each group is one descending range scan of the (subject, name, time_use) index, as a `fun` chain with no
-- intermediate tables: every stored row is touched at most once per request, only rows of the names asked.
local C = require('constants')
local errors = require('errors')
local buckets = require('buckets')

local M = {}

local FUNCTIONS = {sum = true, count = true, min = true, max = true, avg = true, last = true}

-- Groups spec indexes by feature name; returns {name = {lowest_time_bound, {spec_index, ...}}}.
local function group_by_name(specs, now)
    local groups = {}
    for i, spec in ipairs(specs) do
        local fn, name, window = spec[1], spec[2], spec[3] or 0
        if not FUNCTIONS[fn] then
            return nil, errors.new('BAD_ARGUMENT', 'unknown aggregate function ' .. tostring(fn), {index = i})
        end
        if type(name) ~= 'string' or type(window) ~= 'number' or window < 0 then
            return nil, errors.new('BAD_ARGUMENT', 'spec needs a feature name and a window >= 0', {index = i})
        end
        local bound = window > 0 and (now - window) or -math.huge
        local group = groups[name]
        if group == nil then
            groups[name] = {bound, {i}}
        else
            if bound < group[1] then
                group[1] = bound
            end
            group[2][#group[2] + 1] = i
        end
    end
    return groups
end

-- Accumulators live in flat arrays indexed by spec number: no per-row allocation.
local function new_state(n)
    return {sum = {}, count = {}, min = {}, max = {}, last = {}, n = n}
end

local function fold_row(state, specs, bounds, members, t)
    local value, time_use = t[C.F_VALUE], t[C.F_TIME_USE]
    local numeric = type(value) == 'number'
    for _, i in ipairs(members) do
        if time_use > bounds[i] then
            local fn = specs[i][1]
            if fn == 'last' then
                if state.last[i] == nil then
                    state.last[i] = value
                end
            elseif fn == 'count' then
                state.count[i] = (state.count[i] or 0) + 1
            elseif numeric then
                state.sum[i] = (state.sum[i] or 0) + value
                state.count[i] = (state.count[i] or 0) + 1
                if state.min[i] == nil or value < state.min[i] then
                    state.min[i] = value
                end
                if state.max[i] == nil or value > state.max[i] then
                    state.max[i] = value
                end
            end
        end
    end
end

local function result_of(state, fn, i)
    if fn == 'count' then
        return state.count[i] or 0
    elseif fn == 'avg' then
        local n = state.count[i]
        return n and (state.sum[i] / n) or box.NULL
    end
    local v = state[fn][i]
    if v == nil then
        return box.NULL
    end
    return v
end

-- Returns an array of values in spec order (count of nothing is 0, anything else of nothing is null).
function M.aggregate(bucket_id, subject, now, specs)
    if type(subject) ~= 'string' or type(now) ~= 'number' or type(specs) ~= 'table' then
        return nil, errors.new('BAD_ARGUMENT', 'aggregate(bucket_id, subject, now, specs)')
    end
    local wrong = buckets.check_readable(bucket_id)
    if wrong ~= nil then
        return nil, wrong
    end
    local groups, err = group_by_name(specs, now)
    if groups == nil then
        return nil, err
    end
    local bounds = {}
    for i, spec in ipairs(specs) do
        local window = spec[3] or 0
        bounds[i] = window > 0 and (now - window) or -math.huge
    end
    local state = new_state(#specs)
    local index = box.space.features.index.subject_name_time
    for name, group in pairs(groups) do
        local lowest, members = group[1], group[2]
        -- REQ walks only this subject's rows of this name, newest first, so the loop never reads the
        -- string fields (interning them per row fed the Lua GC, see docs/benchmarks.md). Rows after `now`
        -- are filtered rather than dropped: luafun's drop_while rewinds by copying the iterator state,
        -- which a box iterator cannot do, and it loses the first kept row.
        index:pairs({subject, name}, {iterator = 'REQ'})
            :take_while(function(t) return t[C.F_TIME_USE] > lowest end)
            :filter(function(t) return t[C.F_TIME_USE] <= now end)
            :each(function(t) fold_row(state, specs, bounds, members, t) end)
    end
    local values = {}
    for i, spec in ipairs(specs) do
        values[i] = result_of(state, spec[1], i)
    end
    return values
end

return M
