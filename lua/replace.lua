-- Client-data replace: a subject's features of one source become exactly the given rows, atomically,
-- unless a newer version of that source is already stored ("newest wins", so a replay of old client data
-- never overwrites newer data). Runs in one transaction that never yields.
local C = require('constants')
local counts = require('counts')
local errors = require('errors')
local config = require('config')
local buckets = require('buckets')
local put = require('put')
local dict = require('dict')

local M = {}

-- The subject's stored features of a source: a walk over the subject's prefix of the primary index (a subject's
-- rows are a few thousand at most, and client-data replaces are rare). Any row of the source counts, whoever
-- wrote it: after a replace the source is exactly the rows given.
function M.stored(subject, source_id)
    local found = {}
    for _, t in box.space.features:pairs({subject}, {iterator = 'EQ'}) do
        if t[C.F_SOURCE] == source_id then
            found[#found + 1] = t
        end
    end
    return found
end

-- Returns {applied=true, written=, unchanged=, deleted=, tombstoned=} or {applied=false, stored_version=} or nil, err.
function M.replace_source(bucket_id, subject, source, version, rows)
    if type(subject) ~= 'string' or type(source) ~= 'string' or type(version) ~= 'number' then
        return nil, errors.new('BAD_ARGUMENT', 'subject, source and a numeric version are required')
    end
    rows = rows or {}
    for i, row in ipairs(rows) do
        local problem = put.validate(row)
        if problem == nil and (row[C.R_SUBJECT] ~= subject or row[C.R_SOURCE] ~= source) then
            problem = 'every row must belong to the replaced subject and source'
        end
        if problem ~= nil then
            return nil, errors.new('BAD_ARGUMENT', problem, {index = i})
        end
    end
    if #rows > config.max_features_per_subject then
        return nil, errors.new('SUBJECT_TOO_FAT', 'more rows than the per-subject cap', {subject = subject})
    end
    local wrong = buckets.check_writable({{bucket_id}}, 1)
    if wrong ~= nil then
        return nil, wrong
    end
    local stored = box.space.source_versions:get({subject, source})
    if stored ~= nil and stored[4] > version then
        return {applied = false, stored_version = stored[4]}
    end

    local keep = {}
    for _, row in ipairs(rows) do
        keep[row[C.R_OBJECT] .. '\0' .. row[C.R_NAME]] = true
    end
    local features = box.space.features
    local result = {applied = true, written = 0, unchanged = 0, deleted = 0, tombstoned = 0}
    box.begin()
    local stale = {}
    local source_id = dict.find('source', source)
    if source_id ~= nil then
        for _, t in ipairs(M.stored(subject, source_id)) do
            local name = dict.text('name', t[C.F_NAME])
            if not keep[t[C.F_OBJECT] .. '\0' .. name] then
                stale[#stale + 1] = {subject, t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]}
            end
        end
    end
    for _, pk in ipairs(stale) do
        features:delete(pk)
    end
    counts.note(subject, -#stale)
    result.deleted = #stale
    local headroom = {}
    for _, row in ipairs(rows) do
        local outcome = put.upsert_row(row, headroom)
        -- a tombstoned row is skipped as in put_features: a deleted object stays deleted, the rest applies
        if outcome == 'written' or outcome == 'unchanged' or outcome == 'tombstoned' then
            result[outcome] = result[outcome] + 1
        else
            counts.rollback()
            return nil, errors.new(outcome, 'replace refused: ' .. outcome, {subject = subject})
        end
    end
    box.space.source_versions:replace({subject, source, bucket_id, version})
    -- client data decides eligibility: the cached answer may no longer hold
    require('cache').invalidate(subject, bucket_id)
    counts.commit()
    return result
end

return M
