-- Raw reads of a subject's features, optionally filtered by name and a time_use range (both ends inclusive).
local C = require('constants')
local errors = require('errors')
local buckets = require('buckets')

local M = {}

-- opts: {from = ts?, to = ts?, name = string?, limit = n?}. Returns an array of feature tuples, oldest first.
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
    local from = opts.from
    local to = opts.to
    local index, key
    if opts.name ~= nil then
        index = box.space.features.index.subject_name_time
        key = {subject, opts.name}
        if from ~= nil then
            key = {subject, opts.name, from}
        end
    else
        index = box.space.features.index.subject_time
        key = {subject}
        if from ~= nil then
            key = {subject, from}
        end
    end
    local iterator = from ~= nil and 'GE' or 'EQ'
    return index:pairs(key, {iterator = iterator})
        :take_while(function(t)
            return t[C.F_SUBJECT] == subject and (opts.name == nil or t[C.F_NAME] == opts.name)
                and (to == nil or t[C.F_TIME_USE] <= to)
        end)
        :take_n(limit)
        :totable()
end

return M
