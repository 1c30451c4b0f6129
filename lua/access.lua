-- Who may call what (least privilege). Every procedure is registered in _func with setuid, so a caller needs
-- only the right to execute it (the procedure itself runs with the owner's rights and touches the spaces);
-- each store user is granted exactly the procedures of its role:
--
--   ingest (the Kafka consumers): write features and find where to write them;
--   api (the HTTP API and recommendation manager): that, plus reads, aggregates, the recommendation cache and
--        the health statistics;
--   the operations user (`[store] user`, also used for replication) keeps every right: schema, bucket moves,
--        failover, replication settings.
--
-- guest has nothing: a connection must authenticate.
local M = {}

local INGEST = {'put_features', 'replace_source', 'delete_object', 'buckets_owned', 'topology_get', 'ping'}
local API_EXTRA = {
    'aggregate', 'aggregate_at', 'client_read', 'get_features', 'cache_get', 'cache_put', 'cache_invalidate',
    'list_subjects', 'interactions', 'stats',
}

M.ROLES = {ingest = INGEST, api = {}}
for _, name in ipairs(INGEST) do
    table.insert(M.ROLES.api, name)
end
for _, name in ipairs(API_EXTRA) do
    table.insert(M.ROLES.api, name)
end

local function ensure_user(name, password)
    if not box.schema.user.exists(name) then
        box.schema.user.create(name, {password = password})
    else
        box.schema.user.passwd(name, password)
    end
end

-- On the master (replicas receive it): register every procedure, create the role users, grant, lock guest.
-- `procedures` lists the names registered under the global `rtrec`; `users` maps a role to {user, password}.
function M.setup(procedures, users)
    for _, name in ipairs(procedures) do
        box.schema.func.create('rtrec.' .. name, {setuid = true, if_not_exists = true})
    end
    for role, allowed in pairs(M.ROLES) do
        local creds = users and users[role]
        if creds ~= nil then
            ensure_user(creds.user, creds.password)
            for _, name in ipairs(allowed) do
                box.schema.user.grant(creds.user, 'execute', 'function', 'rtrec.' .. name, {if_not_exists = true})
            end
        end
    end
    box.schema.user.revoke('guest', 'usage,session', 'universe', nil, {if_exists = true})
end

return M
