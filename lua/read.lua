-- Raw reads of a subject's features, optionally filtered by name and a time_use range (both ends inclusive).
-- Rows go back with names and sources as text: {bucket_id, subject, source, name, object, value, time_use,
-- expires_at}, oldest first.
local C = require('constants')
local errors = require('errors')
local buckets = require('buckets')
local dict = require('dict')
local fiber = require('fiber')

local M = {}

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
    local now = fiber.time()
    local rows = box.space.features.index.primary:pairs(key, {iterator = 'EQ'})
        :filter(function(t)
            local time_use = t[C.F_TIME_USE]
            return (from == nil or time_use >= from) and (to == nil or time_use <= to)
                and t[C.F_EXPIRES_AT] > now  -- expired rows wait for the sweep but are never read
        end)
        :totable()
    table.sort(rows, function(a, b) return a[C.F_TIME_USE] < b[C.F_TIME_USE] end)
    local out = {}
    for i = 1, math.min(limit, #rows) do
        local t = rows[i]
        out[i] = {
            t[C.F_BUCKET_ID], t[C.F_SUBJECT], dict.text('source', t[C.F_SOURCE]), dict.text('name', t[C.F_NAME]),
            t[C.F_OBJECT], t[C.F_VALUE], t[C.F_TIME_USE], t[C.F_EXPIRES_AT],
        }
    end
    return out
end

return M
