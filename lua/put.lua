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

-- Sources whose event is one object's whole description: a transaction sent again under its tx_id with other
-- fields (a card authorisation settled with another merchant category, a corrected direction) supersedes the
-- first version, whose rows under names the new one lacks must go (they would count the amount twice).
-- Other append sources keep every name: an application's `submitted` and `approved` are both history.
M.SUPERSEDING_SOURCES = {transactions = true}

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

-- Upsert one row inside the caller's transaction. Returns 'written', 'unchanged' or a refusal code, and
-- whether the row was stored before.
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
            return 'unchanged', true
        end
        features:replace({row[C.R_BUCKET_ID], subject, name_id, object, source_id, value, time_use, expires_at})
        return 'written', true
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

-- Delete the rows of the object of rows[first..last] (one run: a version of it) under names that run lacks:
-- one scan of the subject's rows, about a microsecond a row, paid only by a changed resend. Returns how many went.
local function drop_superseded(rows, first, last)
    local subject, object = rows[first][C.R_SUBJECT], rows[first][C.R_OBJECT]
    local source_id = dict.find('source', rows[first][C.R_SOURCE])
    local names = {}
    for i = first, last do
        names[rows[i][C.R_NAME]] = true
    end
    local features = box.space.features
    local doomed = {}
    for _, t in features:pairs({subject}, {iterator = 'EQ'}) do
        if t[C.F_OBJECT] == object and t[C.F_SOURCE] == source_id and not names[dict.text('name', t[C.F_NAME])] then
            doomed[#doomed + 1] = {subject, t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]}
        end
    end
    for _, key in ipairs(doomed) do
        features:delete(key)
    end
    counts.note(subject, -#doomed)
    return #doomed
end

-- rows: array of {bucket_id, subject, source, name, object, value, time_use, expires_at}.
-- Returns {written=, unchanged=, tombstoned=, superseded=, refused={{index, code}, ...}} or nil, err:
-- superseded counts rows of an earlier version of a transaction that its resent version no longer has.
-- A transaction's rows must come in one call (the client never splits an object across chunks).
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
    local result = {written = 0, unchanged = 0, tombstoned = 0, superseded = 0, refused = {}}
    local headroom = {}
    -- The run of rows of one object of a superseding source being written (a version of it: an event's rows
    -- come together): where it starts, whether any of its rows was stored before and whether any was written
    -- now. Stored before and written now is a changed resend. Plain locals: this runs for every row.
    local run_start, run_existed, run_written = nil, false, false
    local function finish_run(last)
        if run_start ~= nil and run_existed and run_written then
            result.superseded = result.superseded + drop_superseded(rows, run_start, last)
        end
        run_start, run_existed, run_written = nil, false, false
    end
    box.begin()
    for i, row in ipairs(rows) do
        if run_start ~= nil then
            local first = rows[run_start]
            if first[C.R_OBJECT] ~= row[C.R_OBJECT] or first[C.R_SUBJECT] ~= row[C.R_SUBJECT]
                or first[C.R_SOURCE] ~= row[C.R_SOURCE] then
                finish_run(i - 1)
            end
        end
        local outcome, existed = M.upsert_row(row, headroom)
        if outcome == 'written' or outcome == 'unchanged' or outcome == 'tombstoned' then
            result[outcome] = result[outcome] + 1
        else
            result.refused[#result.refused + 1] = {i, outcome}
        end
        if M.SUPERSEDING_SOURCES[row[C.R_SOURCE]] then
            run_start = run_start or i
            run_existed = run_existed or existed == true
            run_written = run_written or outcome == 'written'
        end
    end
    finish_run(#rows)
    counts.commit()
    return result
end

return M
