-- Instance statistics for `rtrec status`, metrics and tests.
local config = require('config')
local expiry = require('expiry')

local M = {}

-- Bytes of the features space: tuple data and each index (what memory per stored feature is made of).
local function feature_bytes()
    local space = box.space.features
    local indexes = {}
    for _, index in pairs(space.index) do
        if type(index) == 'table' and index.name ~= nil then
            indexes[index.name] = index:bsize()
        end
    end
    return {data = space:bsize(), indexes = indexes}
end

function M.stats()
    return {
        feature_bytes = feature_bytes(),
        rs_id = config.rs_id,
        ro = box.info.ro,
        features = box.space.features:len(),
        tombstones = box.space.tombstones:len(),
        buckets_active = box.space._bucket.index.status:count({'active'}),
        buckets_total = box.space._bucket:len(),
        buckets_sending = box.space._bucket.index.status:count({'sending'})
            + box.space._bucket.index.status:count({'sent'}),
        buckets_receiving = box.space._bucket.index.status:count({'receiving'}),
        vclock = box.info.vclock,
        lsn = box.info.lsn,
        replication = box.info.replication,
        -- the write lease (mastership.lease_refusal): a master with fewer followers refuses client data writes
        followers_needed = config.followers_needed,
        followers = require('mastership').followers(),
        expiry = expiry.report(),
        memory = box.slab.info(),
        memory_failures = require('errors').memory_failures,
        now = require('clock').time(),
    }
end

return M
