-- Tarantool instance script for one storage node: `tarantool lua/instance.lua` with the instance settings
-- as JSON in the RTREC_INSTANCE environment variable (written by deploy/cluster.py).
--
-- A fresh master bootstraps alone; a fresh replica joins its master only; an instance that already has a
-- snapshot starts with the full mesh of its replica set. The launcher switches fresh instances to the full
-- mesh once every member is up (set_replication), so any replica can follow a promoted one.
local fio = require('fio')
local json = require('json')

-- Absolute, because box.cfg's work_dir changes the current directory.
local script_dir = fio.abspath(fio.dirname(debug.getinfo(1, 'S').source:sub(2)))
package.path = script_dir .. '/?.lua;' .. package.path

local settings = json.decode(assert(os.getenv('RTREC_INSTANCE'), 'RTREC_INSTANCE is not set'))

local function has_snapshot(dir)
    return #fio.glob(fio.pathjoin(dir, '*.snap')) > 0
end

fio.mktree(settings.work_dir)
local bootstrapped = has_snapshot(settings.work_dir)
local replication = settings.replication
if not bootstrapped then
    replication = settings.bootstrap_replication
end

box.cfg({
    listen = settings.listen,
    work_dir = settings.work_dir,
    replication = replication,
    replication_connect_quorum = bootstrapped and 0 or #replication,
    replication_connect_timeout = 30,
    replication_timeout = 1,
    read_only = settings.read_only,
    memtx_memory = settings.memtx_memory,
    wal_mode = settings.wal_mode or 'write',
    log_level = settings.log_level or 5,
    checkpoint_interval = 3600,
    -- Batched writes are ~100-400 KB requests; the 16 KB default made iproto stop reading the writers'
    -- connections ("readahead limit is reached") under ingest.
    readahead = 1024 * 1024,
    checkpoint_count = 2,
})

require('init').start(settings)
require('log').info('rtrec storage instance %s (replica set %d) ready', settings.name, settings.rs_id)
