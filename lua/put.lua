-- Idempotent batched upsert of flat features (append semantics for transactions and events).
-- Each row upserts on the natural key (subject, name, object, source): a redelivered or replayed row
-- rewrites the same tuple instead of adding a second one.
local C = require('constants')
local errors = require('errors')
local config = require('config')
local buckets = require('buckets')
local counts = require('counts')
local cache = require('cache')
local dict = require('dict')
local delete = require('delete')

local M = {}

function M.validate(row)
    if type(row) ~= 'table' or #row < C.R_EXPIRES_AT then
        return 'row must be an array of 8 fields'
    end
    if type(row[C.R_SUBJECT]) ~= 'string' or row[C.R_SUBJECT] == '' then
        return 'subject must be a non-empty string'
    end
    if type(row[C.R_SOURCE]) ~= 'string' or type(row[C.R_NAME]) ~= 'string' or type(row[C.R_OBJECT]) ~= 'string' then
        return 'source, name and object must be strings'
    end
    if type(row[C.R_TIME_USE]) ~= 'number' or type(row[C.R_EXPIRES_AT]) ~= 'number' then
        return 'time_use and expires_at must be numbers'
    end
    local value = row[C.R_VALUE]
    if value == nil or value == box.NULL then
        return 'value must not be null'
    end
    return nil
end

-- Delete the subject's expired rows inside the caller's transaction (the cap must not count rows the hourly
-- sweep has not reached yet). Returns how many went.
function M.drop_expired(subject)
    local features, now = box.space.features, require('fiber').time()
    local doomed = {}
    for _, t in features:pairs({subject}, {iterator = 'EQ'}) do
        if t[C.F_EXPIRES_AT] <= now then
            doomed[#doomed + 1] = {subject, t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]}
        end
    end
    for _, key in ipairs(doomed) do
        features:delete(key)
    end
    counts.note(subject, -#doomed)
    return #doomed
end

-- Upsert one row inside the caller's transaction. Returns 'written', 'unchanged' or a refusal code.
function M.upsert_row(row, headroom)
    local features = box.space.features
    local subject, object = row[C.R_SUBJECT], row[C.R_OBJECT]
    local source = row[C.R_SOURCE]
    if cache.INVALIDATING_SOURCES[source] then
        cache.invalidate(subject, row[C.R_BUCKET_ID])
    end
    local name_id, source_id = dict.intern('name', row[C.R_NAME]), dict.intern('source', source)
    local value, time_use, expires_at = row[C.R_VALUE], row[C.R_TIME_USE], row[C.R_EXPIRES_AT]
    local existing = features:get({subject, name_id, object, source_id})
    if existing ~= nil then
        if existing[C.F_VALUE] == value and existing[C.F_TIME_USE] == time_use
            and existing[C.F_EXPIRES_AT] == expires_at then
            return 'unchanged'
        end
        features:replace({row[C.R_BUCKET_ID], subject, name_id, object, source_id, value, time_use, expires_at})
        return 'written'
    end
    if config.deny_subjects[subject] then
        return 'SUBJECT_DENIED'
    end
    if delete.tombstoned(subject, object, source) then
        return 'tombstoned'
    end
    local room = headroom[subject]
    if room == nil then
        room = config.max_features_per_subject - counts.of(subject)
        if room <= 0 and M.drop_expired(subject) > 0 then  -- expired rows awaiting the sweep take no room
            room = config.max_features_per_subject - counts.of(subject)
        end
    end
    if room <= 0 then
        headroom[subject] = room
        return 'SUBJECT_TOO_FAT'
    end
    headroom[subject] = room - 1
    features:insert({row[C.R_BUCKET_ID], subject, name_id, object, source_id, value, time_use, expires_at})
    counts.note(subject, 1)
    return 'written'
end

-- rows: array of {bucket_id, subject, source, name, object, value, time_use, expires_at}.
-- Returns {written=, unchanged=, tombstoned=, refused={{index, code}, ...}} or nil, err.
-- Nothing is written when any row's bucket is not active here (the client re-routes and retries).
function M.put_features(rows)
    if type(rows) ~= 'table' then
        return nil, errors.new('BAD_ARGUMENT', 'rows must be an array')
    end
    for i, row in ipairs(rows) do
        local problem = M.validate(row)
        if problem ~= nil then
            return nil, errors.new('BAD_ARGUMENT', problem, {index = i})
        end
    end
    local wrong = buckets.check_writable(rows, C.R_BUCKET_ID)
    if wrong ~= nil then
        return nil, wrong
    end
    local result = {written = 0, unchanged = 0, tombstoned = 0, refused = {}}
    local headroom = {}
    box.begin()
    for i, row in ipairs(rows) do
        local outcome = M.upsert_row(row, headroom)
        if outcome == 'written' or outcome == 'unchanged' or outcome == 'tombstoned' then
            result[outcome] = result[outcome] + 1
        else
            result.refused[#result.refused + 1] = {i, outcome}
        end
    end
    counts.commit()
    return result
end

return M
