-- Raw reads of a subject's features, optionally filtered by name and a time_use range (both ends inclusive).
-- Rows go back with names and sources as text: {bucket_id, subject, source, name, object, value, time_use,
-- expires_at}, oldest first.
local C = require('constants')
local errors = require('errors')
local buckets = require('buckets')
local dict = require('dict')
local fiber = require('fiber')

local M = {}

-- A subject may hold up to `max_features_per_subject` rows (100,000): read and sorted in one go they held the
-- transaction thread for about half a second, and every request to the replica set waited behind one
-- inspection read. The rows are read in steps of READ_STEP, each step sorted on its own, with a yield after
-- each (the next step starts after the last key, as expiry's walk does), and the steps are merged oldest first
-- up to `limit`, with a yield every MERGE_STEP rows. Another client's read while a 100,000-row subject is read:
-- p50 of hundreds of ms before, about 1 ms after (`rtrec bench inspect`, docs/benchmarks.md 2026-12-07).
local READ_STEP = 250
local MERGE_STEP = 2000

local function older(a, b)
    return a[C.F_TIME_USE] < b[C.F_TIME_USE]
end

-- The sorted runs merged, oldest first, at most `limit` rows (a heap of the runs' heads).
local function merged(runs, limit)
    local heap, pos = {}, {}
    local function less(i, j)
        return runs[heap[i]][pos[heap[i]]][C.F_TIME_USE] < runs[heap[j]][pos[heap[j]]][C.F_TIME_USE]
    end
    local function down(i)
        local n = #heap
        while true do
            local l, r, m = 2 * i, 2 * i + 1, i
            if l <= n and less(l, m) then m = l end
            if r <= n and less(r, m) then m = r end
            if m == i then return end
            heap[i], heap[m] = heap[m], heap[i]
            i = m
        end
    end
    for r = 1, #runs do
        if #runs[r] > 0 then
            pos[r] = 1
            heap[#heap + 1] = r
        end
    end
    for i = math.floor(#heap / 2), 1, -1 do
        down(i)
    end
    local out = {}
    while #heap > 0 and #out < limit do
        if #out % MERGE_STEP == MERGE_STEP - 1 then
            fiber.yield()  -- the tuples are held: a yield cannot free them
        end
        local r = heap[1]
        out[#out + 1] = runs[r][pos[r]]
        pos[r] = pos[r] + 1
        if pos[r] > #runs[r] then
            heap[1] = heap[#heap]
            heap[#heap] = nil
        end
        down(1)
    end
    return out
end

-- opts: {from = ts?, to = ts?, name = string?, limit = n?}.
function M.get_features(bucket_id, subject, opts)
    if type(subject) ~= 'string' then
        return nil, errors.new('BAD_ARGUMENT', 'subject must be a string')
    end
    local wrong = buckets.check_readable(bucket_id)
    if wrong ~= nil then
        return nil, wrong
    end
    opts = opts or {}
    local limit = opts.limit or C.DEFAULT_READ_LIMIT
    local from, to = opts.from, opts.to
    local key = {subject}
    if opts.name ~= nil then
        local name_id = dict.find('name', opts.name)
        if name_id == nil then
            return {}
        end
        key = {subject, name_id}
    end
    local index = box.space.features.index.primary
    local now = fiber.time()
    local runs, after = {}, nil
    repeat
        local step
        if after == nil then
            step = index:select(key, {iterator = 'EQ', limit = READ_STEP})
        else  -- past the last key read, and still the subject's (and the name's)
            step = index:select(after, {iterator = 'GT', limit = READ_STEP})
        end
        local run, ended = {}, #step < READ_STEP
        for _, t in ipairs(step) do
            if t[C.F_SUBJECT] ~= subject or (key[2] ~= nil and t[C.F_NAME] ~= key[2]) then
                ended = true
                break
            end
            local time_use = t[C.F_TIME_USE]
            if (from == nil or time_use >= from) and (to == nil or time_use <= to)
                and t[C.F_EXPIRES_AT] > now then  -- expired rows wait for the sweep but are never read
                run[#run + 1] = t
            end
        end
        table.sort(run, older)
        runs[#runs + 1] = run
        if not ended then
            local last = step[#step]
            after = {last[C.F_SUBJECT], last[C.F_NAME], last[C.F_OBJECT], last[C.F_SOURCE]}
            fiber.yield()
        end
    until ended
    if #runs > 1 then  -- it yielded: the bucket may have left meanwhile, and what was read be part of it
        wrong = buckets.check_readable(bucket_id)
        if wrong ~= nil then
            return nil, wrong
        end
    end
    local rows = merged(runs, limit)
    local out = {}
    for i, t in ipairs(rows) do
        out[i] = {
            t[C.F_BUCKET_ID], t[C.F_SUBJECT], dict.text('source', t[C.F_SOURCE]), dict.text('name', t[C.F_NAME]),
            t[C.F_OBJECT], t[C.F_VALUE], t[C.F_TIME_USE], t[C.F_EXPIRES_AT],
        }
    end
    return out
end

return M
