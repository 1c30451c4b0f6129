-- Bucket ownership (vshard-compatible `_bucket` space) and the storage half of moving a bucket between
-- replica sets, in vshard's order:
--   source: active -> sending (reads still served, writes refused) -> export pages -> sent (nothing served)
--   destination: import pages as receiving (nothing served) -> active after the source is sent
--   source: drop (delete the copy, forget the bucket)
-- A bucket accepts writes only while it is `active`, so a bucket in flight is never written in two places,
-- and it is never readable in two places either: the source stops serving reads (sent) before the
-- destination starts (active). Every step carries the move's id, so a step of an abandoned move (its
-- mover killed and the move rolled back by `rtrec reshard --recover`) fails instead of reviving it.
local C = require('constants')
local counts = require('counts')
local errors = require('errors')
local dict = require('dict')

local M = {}

M.ACTIVE = 'active'
M.SENDING = 'sending'
M.SENT = 'sent'
M.RECEIVING = 'receiving'

-- The destination field holds "<replica set>/<move id>": the other side of the move and which move it is.
local function peer_and_move(b)
    local field = b[3]
    if field == nil or field == box.NULL then
        return nil, nil
    end
    local peer, move_id = tostring(field):match('^(%d+)/(.+)$')
    if peer == nil then
        return tonumber(field), nil  -- a move started before move ids
    end
    return tonumber(peer), move_id
end

-- Returns nil when every row's bucket is writable here, else a WRONG_BUCKET error listing the others.
-- `column` is the position of bucket_id in each row. Client data also needs the write lease (replicas
-- following this master, mastership.lease_refusal); `without_lease`: the recommendation cache, which no
-- replica serves.
function M.check_writable(rows, column, without_lease)
    local mastership = require('mastership')
    if not mastership.may_write() then
        return errors.new('READ_ONLY', 'this instance is not the recorded master of its replica set')
    end
    if not without_lease then
        local refusal = mastership.lease_refusal()
        if refusal ~= nil then
            return refusal
        end
    end
    local space = box.space._bucket
    local wrong = nil
    local checked = {}  -- a batch holds a few hundred buckets at most: look each up once
    for _, row in ipairs(rows) do
        local bucket_id = row[column]
        if checked[bucket_id] == nil then
            checked[bucket_id] = true
            local b = space:get(bucket_id)
            if b == nil or b[2] ~= M.ACTIVE then
                wrong = wrong or {}
                wrong[#wrong + 1] = bucket_id
            end
        end
    end
    if wrong ~= nil then
        return errors.new('WRONG_BUCKET', 'buckets are not writable on this replica set', {buckets = wrong})
    end
    return nil
end

function M.check_readable(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or (b[2] ~= M.ACTIVE and b[2] ~= M.SENDING) then
        return errors.new('WRONG_BUCKET', 'bucket is not readable on this replica set', {buckets = {bucket_id}})
    end
    return nil
end

-- Bootstrap: mark the given bucket ids active here (like vshard.router.bootstrap).
function M.assign(bucket_ids)
    box.begin()
    for _, id in ipairs(bucket_ids) do
        box.space._bucket:replace({id, M.ACTIVE, box.NULL})
    end
    counts.commit()
    return #bucket_ids
end

-- Buckets this replica set serves: active ones, and sending ones (still readable here while they move).
-- Returns {active = {...}, sending = {...}}; a client prefers an active owner.
function M.owned()
    local function ids(status)
        return box.space._bucket.index.status:pairs({status}):map(function(t) return t[1] end):totable()
    end
    return {active = ids(M.ACTIVE), sending = ids(M.SENDING)}
end

function M.topology_get()
    local t = box.space.cluster_topology:get('topology')
    return t and t[2] or box.NULL
end

function M.topology_set(topology)
    box.space.cluster_topology:replace({'topology', topology})
    return true
end

function M.start_send(bucket_id, destination, move_id)
    local b = box.space._bucket:get(bucket_id)
    if b ~= nil and b[2] == M.SENDING and select(2, peer_and_move(b)) == move_id then
        return true  -- a retried step
    end
    if b == nil or b[2] ~= M.ACTIVE then
        return nil, errors.new('BUCKET_STATE', 'bucket is not active here', {bucket_id = bucket_id})
    end
    box.space._bucket:replace({bucket_id, M.SENDING, tostring(destination) .. '/' .. tostring(move_id)})
    return true
end

-- One page of a bucket's features after `after` (the previous page's `next_after`, nil for the first), with
-- names and sources as text (each replica set interns its own ids), plus on the first page the bucket's
-- tombstones and source versions (small). `next_after` is nil on the last page. Cached answers stay behind:
-- each master keeps its own, and a put computed before the move is refused after it, since the read's gen
-- names the source (see cache.lua).
function M.export(bucket_id, after, limit)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or (b[2] ~= M.SENDING and b[2] ~= M.SENT) then
        return nil, errors.new('BUCKET_STATE', 'bucket must be in sending state to export', {bucket_id = bucket_id})
    end
    limit = limit or C.BUCKET_EXPORT_PAGE
    -- The bucket_id index is non-unique, so memtx orders it by (bucket_id, primary key): pages follow it.
    local key, iterator = {bucket_id}, 'EQ'
    if after ~= nil then
        key, iterator = {bucket_id, after[1], after[2], after[3], after[4]}, 'GT'
    end
    local page, last = {}, nil
    for _, t in box.space.features.index.bucket_id:pairs(key, {iterator = iterator}) do
        if t[C.F_BUCKET_ID] ~= bucket_id or #page >= limit then
            break
        end
        page[#page + 1] = {
            t[C.F_BUCKET_ID], t[C.F_SUBJECT], dict.text('name', t[C.F_NAME]), t[C.F_OBJECT],
            dict.text('source', t[C.F_SOURCE]), t[C.F_VALUE], t[C.F_TIME_USE], t[C.F_EXPIRES_AT],
        }
        last = t
    end
    local extra = nil
    if after == nil then
        extra = {
            tombstones = box.space.tombstones.index.bucket_id:select({bucket_id}),
            versions = box.space.source_versions.index.bucket_id:select({bucket_id}),
            -- the consumer fences (put.lua): a stale writer rerouted to the new owner must meet them there too
            fences = box.space.fences:select(),
        }
    end
    local next_after = box.NULL
    if last ~= nil and #page >= limit then
        next_after = {last[C.F_SUBJECT], last[C.F_NAME], last[C.F_OBJECT], last[C.F_SOURCE]}
    end
    return {features = page, extra = extra, next_after = next_after}
end

-- Receiver side: insert exported tuples as they are (same composite primary key, so no collision). The
-- first page of a move creates the receiving bucket; a later page needs the same move's receiving bucket.
function M.import(bucket_id, features, extra, move_id, first, source)
    local b = box.space._bucket:get(bucket_id)
    if b == nil then
        if not first then
            return nil, errors.new('BUCKET_STATE', 'no receiving bucket for this move (rolled back?)',
                {bucket_id = bucket_id})
        end
    elseif b[2] ~= M.RECEIVING or select(2, peer_and_move(b)) ~= move_id then
        return nil, errors.new('BUCKET_STATE', 'bucket present here for another move or owner',
            {bucket_id = bucket_id})
    end
    box.begin()
    if b == nil then
        box.space._bucket:insert({bucket_id, M.RECEIVING, tostring(source or 0) .. '/' .. tostring(move_id)})
    end
    for _, t in ipairs(features) do
        -- exported with texts: intern them here; a retried import may see its own earlier copy
        local subject, object = t[C.F_SUBJECT], t[C.F_OBJECT]
        local name_id, source_id = dict.intern('name', t[C.F_NAME]), dict.intern('source', t[C.F_SOURCE])
        if box.space.features:get({subject, name_id, object, source_id}) == nil then
            counts.note(subject, 1)
        end
        box.space.features:replace({
            t[C.F_BUCKET_ID], subject, name_id, object, source_id, t[C.F_VALUE], t[C.F_TIME_USE], t[C.F_EXPIRES_AT],
        })
    end
    if extra ~= nil then
        for _, t in ipairs(extra.tombstones or {}) do
            box.space.tombstones:replace(t)
        end
        for _, t in ipairs(extra.versions or {}) do
            box.space.source_versions:replace(t)
        end
        for _, t in ipairs(extra.fences or {}) do  -- the newer generation of the two copies stays
            local stored = box.space.fences:get(t[1])
            if stored == nil or stored[2] < t[2] then
                box.space.fences:replace(t)
            end
        end
    end
    counts.commit()
    return #features
end

-- Source side, after the last page: stop serving the bucket at all (the destination takes over next).
function M.mark_sent(bucket_id, move_id)
    local b = box.space._bucket:get(bucket_id)
    if b ~= nil and b[2] == M.SENT and select(2, peer_and_move(b)) == move_id then
        return true
    end
    if b == nil or b[2] ~= M.SENDING or select(2, peer_and_move(b)) ~= move_id then
        return nil, errors.new('BUCKET_STATE', 'bucket is not sending for this move', {bucket_id = bucket_id})
    end
    box.space._bucket:replace({bucket_id, M.SENT, b[3]})
    return true
end

function M.activate(bucket_id, move_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.RECEIVING or select(2, peer_and_move(b)) ~= move_id then
        return nil, errors.new('BUCKET_STATE', 'bucket is not receiving for this move', {bucket_id = bucket_id})
    end
    -- the bucket's clients may have changed status while it was away: their clearings happened elsewhere
    require('cache').forget()
    box.begin()
    box.space._bucket:replace({bucket_id, M.ACTIVE, box.NULL})
    box.space.bucket_moves:replace({tostring(move_id), bucket_id, require('fiber').time()})
    box.commit()
    return true
end

-- Delete every record of a bucket here (features, tombstones, source versions, cached answers) in batches
-- that yield, then forget the bucket.
local function delete_bucket_records(bucket_id)
    local deleted = 0
    for _, space_name in ipairs({'features', 'tombstones', 'source_versions', 'rec_cache'}) do
        local space = box.space[space_name]
        while true do
            local batch = space.index.bucket_id:select({bucket_id}, {limit = C.DELETE_BATCH})
            if #batch == 0 then
                break
            end
            box.begin()
            for _, t in ipairs(batch) do
                if space_name == 'rec_cache' then
                    space:delete({t[1]})
                elseif space_name == 'features' then
                    space:delete({t[C.F_SUBJECT], t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]})
                else
                    space:delete({t[1], t[2]})  -- tombstones and source_versions: (subject, object|source)
                end
                if space_name == 'features' then
                    counts.note(t[C.F_SUBJECT], -1)
                end
            end
            counts.commit()
            deleted = deleted + #batch
            require('fiber').yield()
        end
    end
    box.space._bucket:delete(bucket_id)
    return deleted
end

-- Whether `vclock` has every replicated row of `target` (component 0 counts local-only changes).
local function covers(vclock, target)
    for id, lsn in pairs(target) do
        if id ~= 0 and (vclock[id] or 0) < lsn then
            return false
        end
    end
    return true
end

-- Whether a replica has every replicated row this instance holds (its whole vclock: rows it received from an
-- earlier master count too), waiting up to `timeout` seconds; true at once without replicas. Returns it and the
-- number of replicas.
local function followed(timeout)
    local own = box.info.id
    local target = box.info.vclock
    local peers = 0
    for id, _ in pairs(box.info.replication) do
        if id ~= own then
            peers = peers + 1
        end
    end
    if peers == 0 then
        return true, 0
    end
    local deadline = require('fiber').clock() + (timeout or 10)
    repeat
        for id, peer in pairs(box.info.replication) do
            local downstream = peer.downstream
            if id ~= own and downstream ~= nil and downstream.vclock ~= nil and covers(downstream.vclock, target) then
                return true, peers
            end
        end
        require('fiber').sleep(0.01)
    until require('fiber').clock() > deadline
    return false, peers
end

-- Receiver side, after activation and before the sender drops its copy: wait (up to `timeout` seconds) until a
-- replica has every row this master holds. Until then the sender's copy is the only other one: a master lost
-- now, before replicating, would take the bucket's whole history with it. The activation must be here: the
-- mover's call reaches whichever instance is master by then, and one promoted after the activation without
-- receiving it holds nothing of the bucket, yet its replicas had every row of its own. It is here when the move's
-- record is (written with the activation; it stays when the bucket moves on), or for a move without an id, when
-- the bucket is active. For the same reason a replica must have the whole vclock, not this instance's own
-- component: the activation may be another's row. {replicated = true} at once for an activation here without
-- replicas; {replicated = false, activated = false} when the activation is not here; {replicated = false} when
-- no replica caught up in time.
function M.wait_replicated(bucket_id, move_id, timeout)
    local activated
    if move_id ~= nil then
        activated = box.space.bucket_moves:get(tostring(move_id)) ~= nil
    else
        local b = box.space._bucket:get(bucket_id)
        activated = b ~= nil and b[2] == M.ACTIVE
    end
    if not activated then
        return {replicated = false, activated = false, replicas = 0}
    end
    local replicated, replicas = followed(timeout)
    return {replicated = replicated, activated = true, replicas = replicas}
end

-- Sender side, after `mark_sent` and before the receiver activates: wait (up to `timeout` seconds) until a
-- replica has every row this master holds, the `sent` mark included. A replica promoted without it would hold
-- the bucket `sending` (serving reads of a copy the receiver's writes no longer reach) or, had it missed the
-- start too, active: writable in two replica sets. {sent = false} when this copy does not hold this move sent
-- (a replica promoted since).
function M.wait_sent_replicated(bucket_id, move_id, timeout)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.SENT or select(2, peer_and_move(b)) ~= move_id then
        return {replicated = false, sent = false, replicas = 0}
    end
    local replicated, replicas = followed(timeout)
    return {replicated = replicated, sent = true, replicas = replicas}
end

-- The sender's last step, once the receiver activated the bucket.
function M.drop(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or b[2] ~= M.SENT then
        return nil, errors.new('BUCKET_STATE', 'only a sent bucket can be dropped', {bucket_id = bucket_id})
    end
    return delete_bucket_records(bucket_id)
end

-- ---- recovering an interrupted move (`rtrec reshard --recover`) ------------------------------------------

-- The sender takes the bucket back: it serves reads and writes again. Only while the receiver never
-- activated it (the recover command checks).
function M.cancel_send(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil or (b[2] ~= M.SENDING and b[2] ~= M.SENT) then
        return nil, errors.new('BUCKET_STATE', 'only a sending bucket can be taken back', {bucket_id = bucket_id})
    end
    box.space._bucket:replace({bucket_id, M.ACTIVE, box.NULL})
    return true
end

-- The receiver throws away a partial copy.
function M.discard(bucket_id)
    local b = box.space._bucket:get(bucket_id)
    if b == nil then
        return 0
    end
    if b[2] ~= M.RECEIVING then
        return nil, errors.new('BUCKET_STATE', 'only a receiving bucket can be discarded', {bucket_id = bucket_id})
    end
    return delete_bucket_records(bucket_id)
end

-- Buckets in flight here: sending = {{bucket_id, status, destination, move_id}, ...},
-- receiving = {{bucket_id, source, move_id}, ...}.
function M.transfers()
    local sending = {}
    for _, status in ipairs({M.SENDING, M.SENT}) do
        for _, t in box.space._bucket.index.status:pairs({status}) do
            local peer, move_id = peer_and_move(t)
            sending[#sending + 1] = {t[1], status, peer, move_id or box.NULL}
        end
    end
    local receiving = {}
    for _, t in box.space._bucket.index.status:pairs({M.RECEIVING}) do
        local peer, move_id = peer_and_move(t)
        receiving[#receiving + 1] = {t[1], peer or box.NULL, move_id or box.NULL}
    end
    return {sending = sending, receiving = receiving}
end

-- What this replica set knows of a bucket and a move: its state here, the move id of a receiving copy, and
-- whether that move was activated here (recorded even after the bucket moved on).
function M.move_state(bucket_id, move_id)
    local b = box.space._bucket:get(bucket_id)
    local receiving_move = nil
    if b ~= nil then
        receiving_move = select(2, peer_and_move(b))
    end
    return {
        status = b and b[2] or box.NULL,
        move_id = (b and b[2] == M.RECEIVING and receiving_move) or box.NULL,
        activated = move_id ~= nil and move_id ~= box.NULL and box.space.bucket_moves:get(tostring(move_id)) ~= nil,
    }
end

return M
