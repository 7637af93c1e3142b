-- Validators (issue 4): records, history, slash receipts and totals, written by projections/validators.py.
-- Append-only like the core tables: a block put on the canonical chain writes its rows, a revert writes rows at
-- the same height and a later position that undo them, and `position` is part of every sort key.

-- A validator's record after each block that changed it (writes/state.Validator.record(), plus `slashable`:
-- stake > 0). A revert writes the record from before the block at the block's height (`present` 0: the block
-- enrolled it). The state after height h is the row with the greatest position among rows at height <= h.
-- `unbond_height` and `release_height` are set on the row of the block where the phase changed (0 elsewhere: no
-- block at height 0 changes a phase); a read takes the newest such row. `unbond_at_ms` may pass 2**63 (a timestamp
-- plus the unbond window); -1 when the validator has none. No column is Nullable: a NULL hashes and sums to NULL.
CREATE TABLE IF NOT EXISTS validator_states
(
    chain_id        LowCardinality(String),
    node_id         String,
    height          UInt64,
    present         UInt8,
    operator        String,
    key_alg         LowCardinality(String),
    key_pk          String,
    gpu_uuid        String,
    stake           UInt64,
    phase           LowCardinality(String),
    unbond_at_ms    Int128,
    enrolled_height UInt64,
    revoked         UInt8,
    slashable       UInt8,
    unbond_height   UInt64,
    release_height  UInt64,
    position        UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, node_id, height, position);

-- What happened to each validator: enrolled, unenrolled, slashed, revoked, released, per block (`seq` orders a
-- block's entries: 2 * tx index, a revocation right after its slash, a release after every tx). A revert writes
-- the block's entries again with `reverted` 1; an entry's latest row is its state.
CREATE TABLE IF NOT EXISTS validator_events
(
    chain_id   LowCardinality(String),
    node_id    String,
    height     UInt64,
    seq        UInt32,
    kind       LowCardinality(String),
    block_hash String,
    tx_id      String,
    amount     UInt64,
    reverted   UInt8,
    position   UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, node_id, height, seq, kind, block_hash, position);

-- Every slash tx of a canonical block, applied or rejected with its reason (amounts 0 when rejected); a revert
-- writes its rows again with status 'reverted' and the original reason. By node_id in the sort key, by tx_id
-- through the bloom filter.
CREATE TABLE IF NOT EXISTS slash_receipts
(
    chain_id       LowCardinality(String),
    node_id        String,
    height         UInt64,
    tx_index       UInt32,
    block_hash     String,
    tx_id          String,
    reporter       String,
    offence_height UInt64,
    status         LowCardinality(String),
    reason         LowCardinality(String),
    slashed        UInt64,
    to_reporter    UInt64,
    burned         UInt64,
    revoked        UInt8,
    position       UInt64,
    INDEX slash_receipts_tx tx_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, node_id, height, tx_index, block_hash, position);

-- Changes of the validator totals per block that changed them (the genesis at height 0): a total after height h
-- is the sum over height <= h. Bonded stake is the stake of active and unbonding validators. A revert writes
-- the block's row negated.
CREATE TABLE IF NOT EXISTS validator_totals
(
    chain_id  LowCardinality(String),
    height    UInt64,
    active    Int64,
    unbonding Int64,
    released  Int64,
    bonded    Int128,
    slashed   Int128,
    burned    Int128,
    position  UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, height, position);
