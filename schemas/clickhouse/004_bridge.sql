-- Bridge reserves and proof of reserves (issue 5: projections/bridge.py writes these, projections/reserve_queries.py
-- reads them). Like every view: append-only, each row stamped with the log position that made it, and a revert
-- writes rows at a later position that undo the block's (negated flows, the records as they were before it,
-- queue entries taken back), so that a read at height h over `height <= h` and `position <= checkpoint` is the
-- canonical state after h. `position` is in every sort key: rows of different events never collapse on merge.

-- Per (asset, block): the block's net change of the asset's bridge figures and of the sum of its balances (the
-- same effects.balances that balance_deltas holds, summed per asset). A figure after height h is the sum over
-- height <= h: deposited, withdrawn, pending, escrow = deposited - withdrawn, liabilities = balances + pending.
CREATE TABLE IF NOT EXISTS reserve_flows
(
    chain_id   LowCardinality(String),
    asset      LowCardinality(String),
    height     UInt64,
    block_hash String,
    deposited  Int128,
    withdrawn  Int128,
    pending    Int128,
    balances   Int128,
    position   UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, asset, height, position);

-- Every change of a reserve record (writes/txs.py: a deposit or a withdrawal by reserve_id). A block that
-- changes it writes the record after the block (`change` 'applied'), a revert of that block writes the record
-- as it was before the block (`change` 'reverted', `present` 0 when the block had created it). The record at
-- height h is the row with the greatest position at height <= h, its history is its 'applied' rows, marked
-- reverted when a later 'reverted' row names the same block.
CREATE TABLE IF NOT EXISTS reserve_records
(
    chain_id         LowCardinality(String),
    reserve_id       String,
    height           UInt64,
    block_hash       String,
    change           LowCardinality(String),
    present          UInt8,
    kind             LowCardinality(String),
    asset            LowCardinality(String),
    amount           UInt64,
    owner            String,
    status           LowCardinality(String),
    external_chain   String,
    external_address String,
    external_tx      String,
    reason           String,
    relayer          String,
    created_height   UInt64,
    updated_height   UInt64,
    position         UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, reserve_id, position);

-- The pending withdrawal queue: +1 when a withdrawal becomes pending, -1 when it leaves (confirmed or rejected),
-- negated by a revert. A withdrawal is pending after height h when its rows at height <= h sum to 1, the
-- identity columns (its request) group the rows, so a reserve_id requested differently on two branches is two
-- entries, of which at most one sums to 1. Listed in request order.
CREATE TABLE IF NOT EXISTS withdrawal_queue
(
    chain_id         LowCardinality(String),
    requested_height UInt64,
    reserve_id       String,
    asset            LowCardinality(String),
    amount           UInt64,
    owner            String,
    external_chain   String,
    external_address String,
    height           UInt64,
    delta            Int8,
    position         UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, requested_height, reserve_id, position);

-- One row per ReservesAttested: an attestation of a final height, never reverted.
CREATE TABLE IF NOT EXISTS reserve_attestations
(
    chain_id    LowCardinality(String),
    asset       LowCardinality(String),
    height      UInt64,
    block_hash  String,
    scheme      LowCardinality(String),
    root        String,
    total       Int128,
    pending     Int128,
    liabilities Int128,
    deposited   Int128,
    withdrawn   Int128,
    escrow      Int128,
    ratio       String,  -- '' when nothing is owed (the event's None)
    leaf_count  UInt64,
    cause       LowCardinality(String),
    position    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, asset, height, position);
