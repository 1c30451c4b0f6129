-- Who is the master of this replica set, by epoch: one replicated record `master:<rs_id>` in the
-- cluster_topology space, {name = <instance>, epoch = <n>}, written by the master itself when it is promoted.
--
-- This is the fence against two masters. A failover promotes a replica with a higher epoch; the record
-- replicates to every copy, and an instance that sees a record naming another master while it is writable
-- makes itself read-only at once (an old master restarted writable by mistake fences itself as soon as it
-- hears from its replica set). An instance refuses to become writable except through `promote` with a
-- newer epoch, and clients that still see two writable instances write only to the recorded one.
local log = require('log')
local fiber = require('fiber')
local config = require('config')

local M = {}

local function key()
    return 'master:' .. tostring(config.rs_id)
end

-- The record {name, epoch} of this replica set, or nil on a store that never had one.
function M.record()
    local space = box.space.cluster_topology
    local t = space ~= nil and space:get(key()) or nil
    return t ~= nil and t[2] or nil
end

local function fence_if_deposed(record)
    if record ~= nil and record.name ~= config.name and not box.info.ro then
        log.warn('rtrec: %s is the master of replica set %d (epoch %d): this instance becomes read-only',
            record.name, config.rs_id, record.epoch)
        -- box.cfg cannot run inside a trigger, and fiber.create would switch to the new fiber at once (a
        -- yield inside the applier's transaction aborts it): fiber.new runs it once this transaction is done
        fiber.new(function()
            box.cfg({read_only = true})
            require('cache').forget()
        end)
    end
end

-- At startup, before anything is written: become read-only at once if the stored record (perhaps just
-- received by replication) names another master.
function M.fence_at_start()
    local record = M.record()
    if record ~= nil and record.name ~= config.name and not box.info.ro then
        log.warn('rtrec: %s is the master of replica set %d (epoch %d): starting read-only',
            record.name, config.rs_id, record.epoch)
        box.cfg({read_only = true})
    end
end

-- Watch for records arriving by replication.
function M.watch()
    box.space.cluster_topology:on_replace(function(_, new)
        if new ~= nil and new[1] == key() then
            fence_if_deposed(new[2])
        end
    end)
end

-- On a fresh store: the bootstrap master records itself with epoch 1.
function M.claim_if_unset()
    if M.record() == nil and not box.info.ro then
        box.space.cluster_topology:replace({key(), {name = config.name, epoch = 1}})
    end
end

-- False when the replicated record names another instance the master: writes must go there (a deposed
-- master that is still writable refuses them before it has fenced itself).
function M.may_write()
    local record = M.record()
    return record == nil or record.name == config.name
end

-- The write lease: a master writes client data only while enough replicas follow it that those which do not
-- cannot vouch for each other. A replica is trusted for reads when it follows a peer (feature_store/freshness.py),
-- so two replicas cut off from the master follow each other and look fresh. Without the lease, a master cut
-- off from them but still reached by the consumers took writes (which the consumers committed) for the whole
-- partition, while an API that could not reach the master served from those replicas: every application in
-- it was missed, its product offered, and nothing said so. With it, such a master stops within its relays'
-- disconnect timeout (4 x replication_timeout, about 4 s) and the partition becomes the case of a dead
-- master: the consumers hold (`rtrec status` says so), the events wait in Kafka, answers are as fresh as the
-- store, and a failover loses at most those seconds. `config.followers_needed` is the replicas less one (one
-- in a replica set of three; none with a single replica, which cut off follows nobody and is never trusted).
-- The cost: a master with fewer followers holds its writes until one is back, as a dead master does.
function M.followers()
    local count = 0
    for id, peer in pairs(box.info.replication) do
        if id ~= box.info.id and peer.downstream ~= nil and peer.downstream.status == 'follow' then
            count = count + 1
        end
    end
    return count
end

-- nil when this master may write client data now, else the NO_REPLICA error (retriable).
function M.lease_refusal()
    local needed = config.followers_needed
    if needed <= 0 then
        return nil
    end
    local followers = M.followers()
    if followers >= needed then
        return nil
    end
    return require('errors').new('NO_REPLICA', string.format('%d of the %d replicas this master needs follow it: '
        .. 'client data writes wait (replicas serving reads would not get them)', followers, needed),
        {instance = config.name, followers = followers, needed = needed})
end

function M.ping()
    local record = M.record()
    return {
        rs_id = config.rs_id,
        ro = box.info.ro,
        uuid = box.info.uuid,
        master = record and record.name or box.NULL,
        epoch = record and record.epoch or 0,
    }
end

-- Become the master with `epoch` (a failover's choice); refused for an epoch not newer than the record's.
function M.promote(epoch, create_schema)
    local record = M.record()
    if type(epoch) ~= 'number' or (record ~= nil and epoch <= record.epoch) then
        return nil, require('errors').new('BAD_ARGUMENT', 'promote needs an epoch newer than the recorded one',
            {recorded = record and record.epoch or 0})
    end
    require('cache').forget()  -- answers cached before now are stale: clearings happened elsewhere meanwhile
    box.cfg({read_only = false})
    require('counts').forget()  -- counts cached before the writes it applied as a replica are stale
    create_schema()
    box.space.cluster_topology:replace({key(), {name = config.name, epoch = epoch}})
    return M.ping()
end

function M.demote()
    box.cfg({read_only = true})
    require('counts').forget()
    require('cache').forget()
    return M.ping()
end

return M
