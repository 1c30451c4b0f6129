-- The instance's runtime settings, filled once by init.start() and read by the procedures.
return {
    rs_id = 0,
    name = '',
    max_features_per_subject = require('constants').DEFAULT_MAX_FEATURES_PER_SUBJECT,
    max_names = require('constants').DEFAULT_MAX_NAMES,
    deny_subjects = {},  -- set: subject -> true
    expiry_interval = require('constants').DEFAULT_EXPIRY_INTERVAL,
    feature_sweep_interval = require('constants').DEFAULT_FEATURE_SWEEP_INTERVAL,
    tombstone_ttl = require('constants').DEFAULT_TOMBSTONE_TTL,
    followers_needed = 0,  -- the write lease (mastership.lease_refusal)
}
