-- Forks (issue 3): one row per reorganization of a chain, as its ChainReorganized event records it.
-- `reverted` are the hashes of the blocks taken off the canonical chain, newest first; `applied` those put on
-- it, oldest first. Listed newest first by position.
CREATE TABLE IF NOT EXISTS reorgs
(
    chain_id         LowCardinality(String),
    cause            LowCardinality(String),
    depth            UInt32,
    ancestor_height  UInt64,
    ancestor_hash    String,
    old_tip_height   UInt64,
    old_tip_hash     String,
    new_tip_height   UInt64,
    new_tip_hash     String,
    reverted         Array(String),
    applied          Array(String),
    position         UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, position);
