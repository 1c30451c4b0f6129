-- Error catalogue of the storage side (modelled on vshard's): every error is a plain table with a stable
-- numeric `code`, a `name`, a human `message` and named fields. Procedures return `nil, err` and never
-- throw across the wire; the Python client maps each code to one exception class.
local M = {}

M.codes = {
    WRONG_BUCKET = {code = 1, name = 'WRONG_BUCKET', retriable = true},
    SUBJECT_TOO_FAT = {code = 2, name = 'SUBJECT_TOO_FAT', retriable = false},
    READ_ONLY = {code = 3, name = 'READ_ONLY', retriable = true},
    BAD_ARGUMENT = {code = 4, name = 'BAD_ARGUMENT', retriable = false},
    SUBJECT_DENIED = {code = 5, name = 'SUBJECT_DENIED', retriable = false},
    BUCKET_STATE = {code = 6, name = 'BUCKET_STATE', retriable = false},
    INTERNAL = {code = 7, name = 'INTERNAL', retriable = false},
    OUT_OF_MEMORY = {code = 8, name = 'OUT_OF_MEMORY', retriable = true},
    TOO_MANY_NAMES = {code = 9, name = 'TOO_MANY_NAMES', retriable = false},
    FENCED = {code = 10, name = 'FENCED', retriable = false},
    NO_REPLICA = {code = 11, name = 'NO_REPLICA', retriable = true},
}

-- Out-of-memory failures seen by this instance (reported by `stats`, shown by `rtrec status`).
M.memory_failures = {count = 0, last_at = box.NULL, last_message = box.NULL}

-- Build an error table: errors.new('WRONG_BUCKET', 'bucket 5 is not here', {bucket_id = 5})
function M.new(name, message, fields)
    local def = M.codes[name] or M.codes.INTERNAL
    local err = {code = def.code, name = def.name, message = message, retriable = def.retriable}
    if fields ~= nil then
        for k, v in pairs(fields) do
            err[k] = v
        end
    end
    return err
end

-- Run fn inside pcall and turn a thrown Lua/box error into an INTERNAL error table, so no procedure
-- ever throws across the wire even on a bug or an out-of-memory.
function M.protect(fn)
    return function(...)
        local ok, res, err = pcall(fn, ...)
        if not ok then
            require('counts').rollback()
            local message = tostring(res)
            if type(res) == 'cdata' or type(res) == 'table' then
                message = res.message or tostring(res)
            end
            if message:find('read%-only') then
                return nil, M.new('READ_ONLY', message)
            end
            if message:find('Failed to allocate') or message:find('not enough memory') then
                M.memory_failures.count = M.memory_failures.count + 1
                M.memory_failures.last_at = require('clock').time()
                M.memory_failures.last_message = message
                return nil, M.new('OUT_OF_MEMORY', message)
            end
            return nil, M.new('INTERNAL', message)
        end
        return res, err
    end
end

return M
