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
-- fields (a card authorisation settled with another amount or merchant category, a corrected direction)
-- supersedes the first version, whose rows under names the new one lacks must go (they would count the amount
-- twice). Other append sources keep every name: an application's `submitted` and `approved` are both history.
M.SUPERSEDING_SOURCES = {transactions = true}
-- Anchor names, with the other anchors of the same source: every version of an object has exactly one, so a
-- version whose rows are all new is still known for a resend when another anchor of its object is stored (a
-- corrected direction shares no name with the first version).
M.OTHER_ANCHORS = {['tx.in.amount'] = {'tx.out.amount'}, ['tx.out.amount'] = {'tx.in.amount'}}

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

-- Upsert one row inside the caller's transaction. Returns 'written', 'unchanged' or a refusal code, and what
-- was stored before: 'new' (nothing), 'same', 'changed' (another value or time) or 'expiry' (only the expiry
-- differs: a TTL change, which is no new version of the object); nil when refused or tombstoned.
function M.upsert_row(row, headroom)
    local features = box.space.features
    local subject, object = row[C.R_SUBJECT], row[C.R_OBJECT]
    local source = row[C.R_SOURCE]
    local holdings = cache.INVALIDATING_SOURCES[source]  -- what the client holds or applied for
    if holdings then
        cache.invalidate(subject, row[C.R_BUCKET_ID])
    end
    local name_id = dict.intern('name', row[C.R_NAME], config.max_names + (holdings and C.HOLDINGS_NAMES_RESERVE or 0))
    if name_id == nil then
        return 'TOO_MANY_NAMES'
    end
    local source_id = dict.intern('source', source)
    local value, time_use, expires_at = row[C.R_VALUE], row[C.R_TIME_USE], row[C.R_EXPIRES_AT]
    local existing = features:get({subject, name_id, object, source_id})
    if existing ~= nil then
        if existing[C.F_VALUE] == value and existing[C.F_TIME_USE] == time_use
            and existing[C.F_EXPIRES_AT] == expires_at then
            return 'unchanged', 'same'
        end
        features:replace({row[C.R_BUCKET_ID], subject, name_id, object, source_id, value, time_use, expires_at})
        if existing[C.F_VALUE] == value and existing[C.F_TIME_USE] == time_use then
            return 'written', 'expiry'
        end
        return 'written', 'changed'
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
    headroom[subject] = room
    if room <= (holdings and -C.HOLDINGS_RESERVE or 0) then
        return 'SUBJECT_TOO_FAT'
    end
    headroom[subject] = room - 1
    features:insert({row[C.R_BUCKET_ID], subject, name_id, object, source_id, value, time_use, expires_at})
    counts.note(subject, 1)
    return 'written', 'new'
end

-- Whether the object of `row` has a row stored under one of `anchors` (a version under other names).
local function anchor_stored(row, anchors)
    local source_id = dict.find('source', row[C.R_SOURCE])
    for _, anchor in ipairs(anchors) do
        local name_id = dict.find('name', anchor)
        if name_id ~= nil and box.space.features:get({row[C.R_SUBJECT], name_id, row[C.R_OBJECT], source_id}) then
            return true
        end
    end
    return false
end

-- Delete the rows of the object of the run rows[first..last] (a version of it) under names the run lacks:
-- one lookup per interned name, as a deletion does (a scan of the client's rows would cost up to 0.1 s on a
-- fat client, inside a transaction that cannot yield). Returns how many went.
local function drop_superseded(rows, first, last)
    local subject = rows[first][C.R_SUBJECT]
    local source_id = dict.find('source', rows[first][C.R_SOURCE])
    local kept = {}
    for i = first, last do
        local name_id = dict.find('name', rows[i][C.R_NAME])
        if name_id ~= nil then
            kept[name_id] = true
        end
    end
    local doomed = 0
    for _, key in ipairs(delete.object_feature_keys(subject, rows[first][C.R_OBJECT], source_id)) do
        if not kept[key[2]] then
            box.space.features:delete(key)
            doomed = doomed + 1
        end
    end
    counts.note(subject, -doomed)
    return doomed
end

local MAX_FENCE_KEYS = 4096

-- The fence of a consumer's write: {keys = {'group/topic/partition', ...}, generation = n, takes_over = {key =
-- stored generation}}, the Kafka partitions the writer's batch came from and the consumer group generation it
-- holds them in. A writer of an older generation than one that already wrote here for any of its partitions
-- lost them (its session expired while it was stalled or cut off, or its request sat in the network): written
-- now, its batch would put back a transaction's first version over the correction the partition's next owner
-- applied. Refused (FENCED, with every refused key and its stored generation), it writes nothing.
-- `takes_over`: the writer proved to the broker that its generation is the group's current one (a group
-- created anew numbers from 1 again) and takes over exactly the fences it was refused by; a fence that moved
-- since (a newer generation wrote) still refuses it, however late the request arrives.
-- Returns the refusal, or nil and the keys whose fence moves to this writer's generation (one lookup per key).
local function check_fence(fence)
    if fence == nil then
        return nil, {}
    end
    if type(fence) ~= 'table' or type(fence.keys) ~= 'table' or #fence.keys > MAX_FENCE_KEYS
        or type(fence.generation) ~= 'number' or fence.generation < 0 or fence.generation % 1 ~= 0
        or (fence.takes_over ~= nil and type(fence.takes_over) ~= 'table') then
        return errors.new('BAD_ARGUMENT', 'fence must be {keys = {strings}, generation = a whole number >= 0, '
            .. 'takes_over = {key = generation}}')
    end
    local takes_over = fence.takes_over or {}
    local refused, first, moving = {}, nil, {}
    for _, key in ipairs(fence.keys) do
        if type(key) ~= 'string' then
            return errors.new('BAD_ARGUMENT', 'fence keys must be strings')
        end
        local stored = box.space.fences:get(key)
        if stored ~= nil and stored[2] > fence.generation and takes_over[key] ~= stored[2] then
            refused[key] = stored[2]
            first = first or key
        elseif stored == nil or stored[2] ~= fence.generation then
            moving[#moving + 1] = key
        end
    end
    if first ~= nil then
        return errors.new('FENCED', string.format(
            '%s was written here by consumer group generation %d; this writer holds generation %d',
            first, refused[first], fence.generation),
            {key = first, stored = refused[first], generation = fence.generation, refused = refused})
    end
    return nil, moving
end

-- rows: array of {bucket_id, subject, source, name, object, value, time_use, expires_at}; fence: see check_fence.
-- Returns {written=, unchanged=, tombstoned=, superseded=, refused={{index, code}, ...}} or nil, err:
-- superseded counts rows of an earlier version of a transaction that its resent version no longer has.
-- A transaction's rows must come in one call (the client never splits an object across chunks).
-- Nothing is written when any row's bucket is not active here (the client re-routes and retries).
function M.put_features(rows, fence)
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
    -- come together, led by its one anchor): where it starts, whether any of its rows was stored before,
    -- whether any is new or changed now, whether any was refused, and the other anchors of its own. Stored
    -- before (or under another anchor) and new or changed now is a changed resend, whose first version's other
    -- rows go - unless a row of it was refused (dropping the old rows would free exactly the room a fat
    -- client's refused row lacked). Plain locals: this runs for every row.
    local run_start, run_existed, run_changed, run_refused, run_anchors = nil, false, false, false, nil
    local function finish_run(last)
        if run_start ~= nil and run_changed and not run_refused then
            if run_existed or (run_anchors ~= nil and anchor_stored(rows[run_start], run_anchors)) then
                result.superseded = result.superseded + drop_superseded(rows, run_start, last)
            end
        end
        run_start, run_existed, run_changed, run_refused, run_anchors = nil, false, false, false, nil
    end
    box.begin()  -- the fence is checked and moved in the write's own transaction: nothing runs in between
    local fenced, moving = check_fence(fence)
    if fenced ~= nil then
        box.rollback()
        return nil, fenced
    end
    local now = require('clock').time()
    for _, key in ipairs(moving) do  -- the fence moves to this writer's generation
        box.space.fences:replace({key, fence.generation, now})
    end
    for i, row in ipairs(rows) do
        if run_start ~= nil then
            local first = rows[run_start]
            if first[C.R_OBJECT] ~= row[C.R_OBJECT] or first[C.R_SUBJECT] ~= row[C.R_SUBJECT]
                or first[C.R_SOURCE] ~= row[C.R_SOURCE]
                or (run_anchors ~= nil and M.OTHER_ANCHORS[row[C.R_NAME]] ~= nil) then
                -- another object, or a second anchor: the next version of the same object (a resend and its
                -- correction side by side), applied after this one exactly as a call of its own would be
                finish_run(i - 1)
            end
        end
        local outcome, before = M.upsert_row(row, headroom)
        if outcome == 'written' or outcome == 'unchanged' or outcome == 'tombstoned' then
            result[outcome] = result[outcome] + 1
        else
            result.refused[#result.refused + 1] = {i, outcome}
        end
        if M.SUPERSEDING_SOURCES[row[C.R_SOURCE]] then
            run_start = run_start or i
            run_existed = run_existed or before == 'same' or before == 'changed' or before == 'expiry'
            run_changed = run_changed or before == 'new' or before == 'changed'
            run_refused = run_refused or before == nil and outcome ~= 'tombstoned'
            run_anchors = run_anchors or M.OTHER_ANCHORS[row[C.R_NAME]]
        end
    end
    finish_run(#rows)
    counts.commit()
    return result
end

return M
