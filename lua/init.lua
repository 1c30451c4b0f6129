-- Storage entry point: applies the instance settings, creates the schema on the master, starts the expiry fiber and registers every procedure under the global `rtrec`
-- namespace (callable over iproto as `rtrec.<name>`). Each procedure is wrapped so it never throws.
local config = require('config')
local errors = require('errors')
local schema = require('schema')
local expiry = require('expiry')
local mastership = require('mastership')
local access = require('access')

local M = {}

-- Registers every procedure under `rtrec`; returns their names.
local function register(api)
    local namespace = {}
    local names = {}
    for name, fn in pairs(api) do
        namespace[name] = errors.protect(fn)
        names[#names + 1] = name
    end
    rawset(_G, 'rtrec', namespace)
    table.sort(names)
    return names
end

-- Applies instance settings (the subset of the instance config the procedures read).
local function apply_settings(settings)
    config.rs_id = settings.rs_id
    config.name = settings.name
    config.max_features_per_subject = settings.max_features_per_subject or config.max_features_per_subject
    config.max_names = settings.max_names or config.max_names
    config.expiry_interval = settings.expiry_interval or config.expiry_interval
    config.feature_sweep_interval = settings.feature_sweep_interval or config.feature_sweep_interval
    config.tombstone_ttl = settings.tombstone_ttl or config.tombstone_ttl
    config.followers_needed = tonumber(settings.followers_needed) or 0
    config.deny_subjects = {}
    for _, subject in ipairs(settings.deny_subjects or {}) do
        config.deny_subjects[subject] = true
    end
end

-- Run a master's setup step; an instance fenced meanwhile (a newer mastership record arrived while the step
-- yielded) just skips it: its master does the same and replication brings the result.
local function as_master(step)
    if box.info.ro then
        return
    end
    local ok, err = pcall(step)
    if not ok then
        if not box.info.ro then
            error(err)
        end
        require('log').warn('rtrec: fenced while setting up as master: %s', err)
    end
end

function M.start(settings)
    apply_settings(settings)
    local C = require('constants')
    collectgarbage('setpause', C.GC_PAUSE)
    collectgarbage('setstepmul', C.GC_STEPMUL)
    -- Watch for a newer mastership record before anything can yield (replication keeps applying rows while
    -- this runs), then fence at once if one already arrived. A brand-new master has no space to watch yet.
    local watching = box.space.cluster_topology ~= nil
    if watching then
        mastership.watch()
    end
    schema.check_layout()  -- a store of an older layout stops here, saying what to do
    mastership.fence_at_start()
    as_master(function()
        schema.create(settings.user, settings.password)
        mastership.claim_if_unset()
    end)
    if not watching then
        mastership.watch()
    end
    expiry.start()
    local procedures
    local function create_schema()
        schema.create(settings.user, settings.password)
        access.setup(procedures, settings.users)
    end

    local buckets = require('buckets')
    local put = require('put')
    local replace = require('replace')
    local delete = require('delete')
    local read = require('read')
    local aggregate = require('aggregate')
    local stats = require('stats')
    local cache = require('cache')
    local subjects = require('subjects')
    local client_read = require('client_read')
    procedures = register({
        cache_get = cache.cache_get,
        cache_put = cache.cache_put,
        cache_invalidate = cache.cache_invalidate,
        client_read = client_read.client_read,
        list_subjects = subjects.list_subjects,
        interactions = subjects.interactions,
        put_features = put.put_features,
        replace_source = replace.replace_source,
        delete_object = delete.delete_object,
        purge_subject = delete.purge_subject,
        get_features = read.get_features,
        aggregate = aggregate.aggregate,
        aggregate_at = aggregate.aggregate_at,
        stats = stats.stats,
        expire_now = function(now) return expiry.run_once(now, true) end,
        buckets_owned = buckets.owned,
        topology_get = buckets.topology_get,
        topology_set = buckets.topology_set,
        bucket_assign = buckets.assign,
        bucket_start_send = buckets.start_send,
        bucket_export = buckets.export,
        bucket_import = buckets.import,
        bucket_activate = buckets.activate,
        bucket_drop = buckets.drop,
        bucket_wait_replicated = buckets.wait_replicated,
        bucket_wait_sent_replicated = buckets.wait_sent_replicated,
        bucket_cancel_send = buckets.cancel_send,
        bucket_discard = buckets.discard,
        bucket_transfers = buckets.transfers,
        bucket_move_state = buckets.move_state,
        bucket_mark_sent = buckets.mark_sent,
        -- Ops: change replication peers or promote/demote this instance (failover) without a restart.
        set_replication = function(uris)
            -- An upstream stopped on an error stays stopped until the configuration changes (the same list is
            -- no change): a replica that was down while a peer was rebuilt finds the peer's log starting after
            -- its own position (XlogGapError, "Missing .xlog file"), and follows it once it caught up from the
            -- master. So start over then; not for other errors (a conflict), which a reconnect does not mend.
            for _, peer in pairs(box.info.replication) do
                local upstream = peer.upstream
                if upstream ~= nil and upstream.status == 'stopped'
                        and tostring(upstream.message):find('Missing .xlog', 1, true) ~= nil then
                    box.cfg({replication = {}})
                    break
                end
            end
            box.cfg({replication = uris, replication_connect_quorum = 0})
            return true
        end,
        -- Ops: strike instances that no longer exist (rejoined or rebuilt under a new UUID: deploy/cluster.py
        -- forget_replaced) from the replica set. Left registered, each keeps a garbage-collection hold on its
        -- peers' write-ahead logs for good, and one of the 31 instance ids. Refused for this instance and for
        -- one that shows any sign of life. Deferred (nothing removed) while another registered peer is not
        -- connected to this master (a replica down): it may still carry rows written under a forgotten id,
        -- which would collide with the rows of the next instance to take that id.
        forget_replicas = function(uuids)
            if box.info.ro then
                return nil, errors.new('READ_ONLY', 'only the master changes the replica set')
            end
            local forget = {}
            for _, uuid in ipairs(uuids) do
                forget[uuid] = true
            end
            local gone = {}
            for _, registered in box.space._cluster:pairs() do
                local id, uuid = registered[1], registered[2]
                local peer = box.info.replication[id] or {}
                local up, down = peer.upstream, peer.downstream
                if uuid == box.info.uuid then
                    if forget[uuid] then
                        return nil, errors.new('BAD_ARGUMENT', 'this instance cannot forget itself', {uuid = uuid})
                    end
                elseif forget[uuid] then
                    local silent = (up == nil or up.status == 'stopped' or up.status == 'disconnected')
                        and (down == nil or down.status == 'stopped')
                    if not silent then
                        return nil, errors.new('BAD_ARGUMENT', 'that instance shows signs of life', {uuid = uuid})
                    end
                    gone[#gone + 1] = id
                elseif not ((up ~= nil and up.status == 'follow') or (down ~= nil and down.status == 'follow')) then
                    return {removed = {}, deferred = 'a peer is not connected to this master: ' .. uuid}
                end
            end
            local removed = {}
            for _, id in ipairs(gone) do
                removed[#removed + 1] = box.space._cluster:get(id)[2]
                box.space._cluster:delete(id)
            end
            return {removed = removed}
        end,
        promote = function(epoch)
            return mastership.promote(epoch, create_schema)
        end,
        demote = mastership.demote,
        ping = mastership.ping,
    })
    as_master(function() access.setup(procedures, settings.users) end)
end

return M
