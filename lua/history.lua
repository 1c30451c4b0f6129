-- The client data history keeps, of each run of versions with the same value, only the first and the last.
--
-- Producers often resend a client's whole profile (a daily snapshot job, a change of one field sends them
-- all): every resend used to add one row per fact, 365 a year for a fact that never changed, each of them
-- scanned by every aggregation of the client for the ten years history lives. The views read history only
-- through `last` and `changes`, and neither can tell a run's middle versions apart from its first: `last`
-- at any time reads the same value, and a middle version never differs from the one before it. Keeping the
-- run's last version too (not only its first) keeps a version that arrives late, out of order, in the right
-- place: stored A(t1), A(t3), a late B(t2) reads A, B, A. Only a late version inside a run, before a middle
-- version that was dropped, moves the run's return to its value later (to the run's last kept version).
local C = require('constants')
local counts = require('counts')

local M = {}

M.SOURCE = 'client_history'

-- The two stored versions of the fact nearest `time_use` on each side: before1 newest, after1 oldest.
local function nearest(subject, name_id, source_id, time_use)
    local before1, before2, after1, after2
    for _, t in box.space.features:pairs({subject, name_id}, {iterator = 'EQ'}) do
        if t[C.F_SOURCE] == source_id then
            local at = t[C.F_TIME_USE]
            if at < time_use then
                if before1 == nil or at > before1[C.F_TIME_USE] then
                    before1, before2 = t, before1
                elseif before2 == nil or at > before2[C.F_TIME_USE] then
                    before2 = t
                end
            elseif at > time_use then
                if after1 == nil or at < after1[C.F_TIME_USE] then
                    after1, after2 = t, after1
                elseif after2 == nil or at < after2[C.F_TIME_USE] then
                    after2 = t
                end
            end
        end
    end
    return before1, before2, after1, after2
end

local function same(t, value)
    return t ~= nil and t[C.F_VALUE] == value
end

local function drop(t)
    box.space.features:delete({t[C.F_SUBJECT], t[C.F_NAME], t[C.F_OBJECT], t[C.F_SOURCE]})
end

-- Called inside the caller's transaction before a new version is inserted. Returns true when the version
-- falls inside a run of its value (nothing to store), else false after dropping the neighbour it turns into
-- a run's middle; the second result is how many rows went (already taken off the subject's count).
function M.fold(subject, name_id, source_id, value, time_use)
    local before1, before2, after1, after2 = nearest(subject, name_id, source_id, time_use)
    if same(before1, value) and same(after1, value) then
        return true, 0
    end
    local dropped = 0
    if same(before1, value) and same(before2, value) then  -- before1 was the run's last; this one is now
        drop(before1)
        dropped = dropped + 1
    end
    if same(after1, value) and same(after2, value) then  -- after1 was the run's first; this one is now
        drop(after1)
        dropped = dropped + 1
    end
    counts.note(subject, -dropped)
    return false, dropped
end

return M
