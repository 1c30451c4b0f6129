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
    local t = box.space.cluster_topology:get(key())
    return t ~= nil and t[2] or nil
end

local function fence_if_deposed(record)
    if record ~= nil and record.name ~= config.name and not box.info.ro then
        log.warn('rtrec: %s is the master of replica set %d (epoch %d): this instance becomes read-only',
            record.name, config.rs_id, record.epoch)
        -- box.cfg cannot run inside a trigger; a fiber does it right after
        fiber.create(function() box.cfg({read_only = true}) end)
    end
end

-- Called once at startup: fence now if the stored record already names another master, and watch for new
-- records arriving by replication.
function M.start()
    fence_if_deposed(M.record())
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
    box.cfg({read_only = false})
    create_schema()
    box.space.cluster_topology:replace({key(), {name = config.name, epoch = epoch}})
    return M.ping()
end

function M.demote()
    box.cfg({read_only = true})
    return M.ping()
end

return M
