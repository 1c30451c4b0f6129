-- Aggregation on demand: a list of specs computed in one call at a given `now` (point-in-time correct).
--
-- A spec is {fn, name, window_seconds} with fn in sum|count|min|max|avg|last|changes and window 0 meaning
-- "all history". A window covers now - window < time_use <= now. Specs are grouped by feature name and
-- each group is one scan of the subject's (subject, name_id) prefix of the primary index (in steps with yields
-- between them for a large client, SCAN_STEP), with no intermediate tables: every stored row is touched at most
-- once per request, only rows of the names asked.
-- (Rows of a prefix are in object order, not time order: `last` keeps the newest row it meets.)
local C = require('constants')
local errors = require('errors')
local buckets = require('buckets')
local dict = require('dict')
local fiber = require('fiber')

local M = {}

-- A call reads SCAN_STEP rows (2-3 ms for the served view), then yields so other requests run, and goes on at
-- the next key. A client at the 100,000-row cap took about 0.2 s of its master's only thread for the served
-- view, and every other client of that replica set waited the whole of it (`rtrec bench inspect`). A client of
-- fewer rows is read in one atomic look, as before; a larger one may see a write of its own that lands between
-- two steps in one name and not another (client_read takes the status generation and the freshness before the
-- read, so such an answer is never cached or taken as fresher than it is; a bucket moved away meanwhile is
-- found after the read).
local SCAN_STEP = 1000
local FROM_START, FROM_ROW = {iterator = 'EQ'}, {iterator = 'GE'}

local FUNCTIONS = {sum = true, count = true, min = true, max = true, avg = true, last = true, changes = true}

-- Groups spec indexes by feature name: {name = {members = {spec_index, ...}, changes = true when one of them
-- is a `changes` spec}}.
local function group_by_name(specs)
    local groups = {}
    for i, spec in ipairs(specs) do
        local fn, name, window = spec[1], spec[2], spec[3] or 0
        if not FUNCTIONS[fn] then
            return nil, errors.new('BAD_ARGUMENT', 'unknown aggregate function ' .. tostring(fn), {index = i})
        end
        if type(name) ~= 'string' or type(window) ~= 'number' or window < 0 then
            return nil, errors.new('BAD_ARGUMENT', 'spec needs a feature name and a window >= 0', {index = i})
        end
        local group = groups[name]
        if group == nil then
            group = {members = {}, changes = false}
            groups[name] = group
        end
        group.members[#group.members + 1] = i
        group.changes = group.changes or fn == 'changes'
    end
    return groups
end

-- Accumulators live in flat arrays indexed by spec number: no per-row allocation.
local function new_state(n)
    return {sum = {}, count = {}, min = {}, max = {}, last = {}, last_time = {}, n = n}
end

-- Values in one total order, for ties: booleans (false < true) < numbers < strings.
local TYPE_RANK = {boolean = 1, number = 2, cdata = 2, string = 3}  -- cdata: 64-bit integers

local function greater(a, b)
    local ra, rb = TYPE_RANK[type(a)] or 0, TYPE_RANK[type(b)] or 0
    if ra ~= rb then
        return ra > rb
    end
    if ra == 1 then
        return a and not b
    end
    return a > b
end

-- `last` is the value of the newest row; among rows of the same time, the greatest value in the order above
-- (so the result does not depend on the order rows are met in).
local function newer(state, i, value, time_use)
    local best = state.last_time[i]
    if best == nil or time_use > best then
        return true
    end
    return time_use == best and greater(value, state.last[i])
end

local function fold_row(state, specs, bounds, members, t)
    local value, time_use = t[C.F_VALUE], t[C.F_TIME_USE]
    local numeric = type(value) == 'number'
    for _, i in ipairs(members) do
        if time_use > bounds[i] then
            local fn = specs[i][1]
            if fn == 'last' then
                if newer(state, i, value, time_use) then
                    state.last[i], state.last_time[i] = value, time_use
                end
            elseif fn == 'count' then
                state.count[i] = (state.count[i] or 0) + 1
            elseif numeric and fn ~= 'changes' then  -- changes are counted after the scan, in time order
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

-- `changes`: how many versions inside the window differ in value from the version just before them, which may
-- lie before the window (a move to another region, a retail client who opened a business). The rows of a
-- prefix come in object order, so the scan keeps the rows inside the widest `changes` window and the newest
-- row before it, and they are sorted by time here, once per name and time asked: a request may hold many
-- `changes` specs over one name (up to the API's 500), and sorting for each held the master for seconds on a
-- large client. Returns the count for a window's lower bound: a binary search over the sorted versions.
local function changes_counter(versions)
    table.sort(versions, function(a, b)
        if a[1] ~= b[1] then
            return a[1] < b[1]
        end
        return greater(b[2], a[2])
    end)
    local n = #versions
    -- changed_from[j]: the versions from the j-th on that differ from the one before them
    local changed_from, changed = {[n + 1] = 0}, 0
    for j = n, 2, -1 do
        if versions[j][2] ~= versions[j - 1][2] then
            changed = changed + 1
        end
        changed_from[j] = changed
    end
    changed_from[1] = changed  -- the first version has none before it to differ from
    return function(bound)
        local low, high = 1, n + 1  -- the first version later than the bound
        while low < high do
            local middle = math.floor((low + high) / 2)
            if versions[middle][1] > bound then
                high = middle
            else
                low = middle + 1
            end
        end
        return changed_from[low]
    end
end

local function result_of(state, fn, i)
    if fn == 'count' or fn == 'changes' then
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

-- The bounds of every spec as of `now` (a window covers now - window < time_use <= now), and per feature name
-- the lowest bound of its `changes` specs (absent without one).
local function bounds_at(specs, groups, now)
    local bounds = {}
    for i, spec in ipairs(specs) do
        local window = spec[3] or 0
        bounds[i] = window > 0 and (now - window) or -math.huge
    end
    local changes_bounds = {}
    for name, group in pairs(groups) do
        for _, i in ipairs(group.members) do
            if specs[i][1] == 'changes' and (changes_bounds[name] == nil or bounds[i] < changes_bounds[name]) then
                changes_bounds[name] = bounds[i]
            end
        end
    end
    return bounds, changes_bounds
end

local function validate(subject, times, specs)
    if type(subject) ~= 'string' or type(times) ~= 'table' or type(specs) ~= 'table' then
        return errors.new('BAD_ARGUMENT', 'aggregate_at(bucket_id, subject, times, specs)')
    end
    if #times == 0 or #times > C.AGGREGATE_MAX_TIMES then
        return errors.new('BAD_ARGUMENT', 'between 1 and ' .. C.AGGREGATE_MAX_TIMES .. ' times per call')
    end
    for k, now in ipairs(times) do
        if type(now) ~= 'number' then
            return errors.new('BAD_ARGUMENT', 'a time must be a number', {index = k})
        end
    end
end

-- The values of `specs` as of each of `times`, from one scan of each feature name: a row is read once and
-- folded into the state of every time it is visible at (time_use <= now < expires_at).
local function aggregate_times(bucket_id, subject, times, specs)
    local err = validate(subject, times, specs)
    if err ~= nil then
        return nil, err
    end
    local wrong = buckets.check_readable(bucket_id)
    if wrong ~= nil then
        return nil, wrong
    end
    local groups
    groups, err = group_by_name(specs)
    if groups == nil then
        return nil, err
    end
    local n = #times
    local states, bounds, changes_bounds = {}, {}, {}
    for k, now in ipairs(times) do
        states[k] = new_state(#specs)
        bounds[k], changes_bounds[k] = bounds_at(specs, groups, now)
    end
    local primary = box.space.features.index.primary
    local budget, yielded = SCAN_STEP, false
    for name, group in pairs(groups) do
        local name_id = dict.find('name', name)
        if name_id ~= nil then  -- a name never stored has no rows
            local members, has_changes = group.members, group.changes
            -- per time: rows in the widest `changes` window, and the newest row before it
            local versions, before = {}, {}
            for k = 1, n do
                versions[k] = {}
            end
            -- in steps of SCAN_STEP rows (over every name of the call) with a yield between them: see SCAN_STEP
            local key, from = {subject, name_id}, FROM_START
            while key ~= nil do
                local resume = nil
                for _, t in primary:pairs(key, from) do
                    if from == FROM_ROW and (t[C.F_NAME] ~= name_id or t[C.F_SUBJECT] ~= subject) then
                        break
                    end
                    if budget == 0 then
                        resume = t  -- not folded yet: the next step starts at it
                        break
                    end
                    budget = budget - 1
                    local time_use, expires_at = t[C.F_TIME_USE], t[C.F_EXPIRES_AT]
                    local version = has_changes and {time_use, t[C.F_VALUE]} or nil  -- shared: only read later
                    for k = 1, n do
                        local now = times[k]
                        if time_use <= now and expires_at > now then
                            fold_row(states[k], specs, bounds[k], members, t)
                            if has_changes then
                                local previous = before[k]
                                if time_use > changes_bounds[k][name] then
                                    versions[k][#versions[k] + 1] = version
                                elseif previous == nil or time_use > previous[1]
                                        or (time_use == previous[1] and greater(version[2], previous[2])) then
                                    before[k] = version
                                end
                            end
                        end
                    end
                end
                key = nil
                if resume ~= nil then
                    fiber.yield()
                    yielded, budget = true, SCAN_STEP
                    key, from = {subject, name_id, resume[C.F_OBJECT], resume[C.F_SOURCE]}, FROM_ROW
                end
            end
            if has_changes then
                for k = 1, n do
                    versions[k][#versions[k] + 1] = before[k]  -- a no-op when nil
                    local changes_since = changes_counter(versions[k])
                    for _, i in ipairs(members) do
                        if specs[i][1] == 'changes' then
                            states[k].count[i] = changes_since(bounds[k][i])
                        end
                    end
                end
            end
        end
    end
    -- a bucket moved away while the read yielded may have lost rows to its drop: the caller asks its new owner
    if yielded then
        wrong = buckets.check_readable(bucket_id)
        if wrong ~= nil then
            return nil, wrong
        end
    end
    local answers = {}
    for k = 1, n do
        local values = {}
        for i, spec in ipairs(specs) do
            values[i] = result_of(states[k], spec[1], i)
        end
        answers[k] = values
    end
    return answers
end

-- Returns an array of values in spec order (count of nothing is 0, anything else of nothing is null).
function M.aggregate(bucket_id, subject, now, specs)
    if type(subject) ~= 'string' or type(now) ~= 'number' or type(specs) ~= 'table' then
        return nil, errors.new('BAD_ARGUMENT', 'aggregate(bucket_id, subject, now, specs)')
    end
    local answers, err = aggregate_times(bucket_id, subject, {now}, specs)
    if answers == nil then
        return nil, err
    end
    return answers[1]
end

-- The same specs as of several times in one call, one array of values per time (training reads a client at
-- every cut: one scan instead of one per cut).
M.aggregate_at = aggregate_times

return M
