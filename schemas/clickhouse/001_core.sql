-- Read-side tables of the ledger log (issue 2: genesis, blocks, transfers, votes, finality; issue 3: forks).
--
-- Every table carries `chain_id` (one log serves several chains) and, as its last column, `position`: the log
-- position (notification id) of the event that wrote the row. The sink inserts a batch's rows and only then
-- its checkpoint; on start it deletes every row past the checkpoint, so a crash between two inserts neither
-- loses nor doubles a row. ReplacingMergeTree keys are each row's identity, so a duplicate delivery from an
-- at-least-once path collapses on merge; no query relies on merges having happened. Rows written by
-- different positions never share a sort key: a merge must not replace a checkpointed row with one that a
-- restart would then delete as uncheckpointed.
--
-- Forks keep every table append-only: a revert or reapply writes new rows for a block at a later position,
-- and a block's (or a tx's) current row is its one with the greatest position. `position` is therefore part
-- of the sort key of every table that a later event writes again (blocks, transactions, receipts,
-- account_txs), and readers take the latest row per identity (projections/queries.py).
--
-- Amounts are UInt64 (each figure is < 2**63), signed changes and totals Int128 (sums may pass 2**63).
-- Statements are separated by ';' (projections/store.py splits on it): no ';' inside a comment or a literal.
-- Any change to a statement changes the DDL fingerprint, and projections/store.py then drops these tables and
-- recreates them: the views are rebuilt from the log (comment lines are not part of the fingerprint).

-- One row per accepted genesis; chains are listed in genesis (log) order.
CREATE TABLE IF NOT EXISTS chains
(
    chain_id     LowCardinality(String),
    genesis_hash String,
    timestamp_ms UInt64,
    params       String,  -- canonical JSON of the genesis params, defaults filled
    position     UInt64
)
ENGINE = ReplacingMergeTree(position)
ORDER BY chain_id;

-- One row per block event: applied or reapplied (canonical = 1), recorded on a side branch or reverted
-- (canonical = 0); the genesis block (height 0) is canonical. A block is canonical when its latest row is.
CREATE TABLE IF NOT EXISTS blocks
(
    chain_id       LowCardinality(String),
    height         UInt64,
    hash           String,
    parent         String,
    proposer       String,
    operator       String,
    timestamp_ms   UInt64,
    tx_root        String,
    tx_count       UInt32,
    applied_count  UInt32,
    rejected_count UInt32,
    reward         UInt64,
    fees           UInt64,
    canonical      UInt8,
    position       UInt64,
    -- Lookups by hash and by proposer are not on the sort key; these let them skip granules.
    INDEX blocks_hash hash TYPE bloom_filter GRANULARITY 1,
    INDEX blocks_proposer proposer TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, height, hash, position);

-- Every tx of every applied, reverted or reapplied block with its receipt (a revert's rows have status
-- 'reverted' and keep the original reason; side blocks that were never canonical have no rows).
-- `from_address`/`to_address`/`asset`/`amount` are the transfer's; other kinds fill what they have
-- (empty / 0). `nonce` is NULL for kinds without one.
CREATE TABLE IF NOT EXISTS transactions
(
    chain_id     LowCardinality(String),
    height       UInt64,
    tx_index     UInt32,
    block_hash   String,
    tx_id        String,
    kind         LowCardinality(String),
    signer       String,
    from_address String,
    to_address   String,
    asset        LowCardinality(String),
    amount       UInt64,
    fee          UInt64,
    nonce        Nullable(UInt64),
    status       LowCardinality(String),
    reason       LowCardinality(String),
    position     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, height, tx_index, block_hash, position);

-- Receipts by tx_id: a tx may be included more than once (a replay is rejected) and in blocks that are
-- reverted and reapplied, so one tx_id can have several rows; the read side picks DOMAIN.md's one (the
-- canonical applied, else the latest canonical rejected, else the most recently reverted).
CREATE TABLE IF NOT EXISTS receipts
(
    tx_id      String,
    chain_id   LowCardinality(String),
    height     UInt64,
    tx_index   UInt32,
    block_hash String,
    status     LowCardinality(String),
    reason     LowCardinality(String),
    position   UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (tx_id, chain_id, height, tx_index, block_hash, position);

-- The txs that touch an address (as signer, sender or recipient), one row per distinct address per tx, each a
-- full copy of its `transactions` row: an account's history is one range scan, newest first, with no join.
CREATE TABLE IF NOT EXISTS account_txs
(
    chain_id     LowCardinality(String),
    address      String,
    height       UInt64,
    tx_index     UInt32,
    block_hash   String,
    tx_id        String,
    kind         LowCardinality(String),
    signer       String,
    from_address String,
    to_address   String,
    asset        LowCardinality(String),
    amount       UInt64,
    fee          UInt64,
    nonce        Nullable(UInt64),
    status       LowCardinality(String),
    reason       LowCardinality(String),
    position     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, address, height, tx_index, block_hash, position)
SETTINGS index_granularity = 1024;

-- Net change per (address, asset) per block: a balance after height h is sum(delta) over height <= h.
-- Genesis allocations are deltas at height 0. The account's next nonce is kept here too, under the reserved
-- asset '#nonce' (no asset symbol starts with '#'), as after - before per block: an account read (balances and
-- nonce at a height) is then one range scan, and a revert is the same rows negated at a later position (a
-- reapply the same rows again), which is why `position` is part of the identity.
CREATE TABLE IF NOT EXISTS balance_deltas
(
    chain_id LowCardinality(String),
    address  String,
    asset    LowCardinality(String),
    height   UInt64,
    delta    Int128,
    position UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, address, asset, height, position)
-- Small granules: a lookup is one address, so it should read few rows past it.
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS votes
(
    chain_id   LowCardinality(String),
    height     UInt64,
    block_hash String,
    node_id    String,
    position   UInt64
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (chain_id, height, block_hash, node_id);

-- One row per block made final, ancestors included; `position` is the finalizing event's, and the head
-- figures are the canonical head when it happened (so finality delay is a fact of the log). The genesis block
-- is final by definition: its row has head_height 0 and its own timestamp.
CREATE TABLE IF NOT EXISTS finality
(
    chain_id          LowCardinality(String),
    height            UInt64,
    hash              String,
    head_height       UInt64,
    head_timestamp_ms UInt64,
    voting_stake      UInt128,
    total_stake       UInt128,
    position          UInt64
)
ENGINE = ReplacingMergeTree(position)
ORDER BY (chain_id, height, hash);

-- Supply and activity per (block, asset): minted - burned summed over blocks is the supply (for CELL it
-- includes bonded stake: genesis stakes are minted at height 0); volume and fees are summed for `stats`. A
-- revert writes the block's row negated.
CREATE TABLE IF NOT EXISTS asset_flows
(
    chain_id LowCardinality(String),
    height   UInt64,
    asset    LowCardinality(String),
    minted   Int128,
    burned   Int128,
    volume   Int128,
    fees     Int128,
    position UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, asset, height, position);

-- The chain's pointers: kind 'head' (the canonical tip) and 'finalized' (the newest final block). The row
-- with the greatest position of each kind is current (a read-in-order scan of one granule). It is written
-- last in every batch: a reader that sees a head sees every row up to it. A reorganization moves the head
-- down to the common ancestor, and each reapplied or applied block moves it up again, so that the rows at
-- heights up to the head are the canonical chain at every position.
CREATE TABLE IF NOT EXISTS chain_head
(
    chain_id     LowCardinality(String),
    kind         LowCardinality(String),
    height       UInt64,
    hash         String,
    timestamp_ms UInt64,
    position     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, kind, position);

-- Events the projector could not decode or project: kept as data (never a crashed follower), so that an
-- operator sees them and a fixed projector can replay them.
CREATE TABLE IF NOT EXISTS projection_errors
(
    chain_id LowCardinality(String),
    topic    String,
    error    String,
    position UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (position, chain_id);

-- The last position whose rows are all written, per projector; written after the rows of its batch.
CREATE TABLE IF NOT EXISTS checkpoints
(
    projector  LowCardinality(String),
    position   UInt64,
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(position)
ORDER BY projector;
