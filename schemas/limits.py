"""Every limit in one place, units last in the name (TIGER_STYLE)."""

from __future__ import annotations

AMOUNT_MAX = 2**63 - 1  # every individual figure is 0 <= x < 2**63
ID_LEN_MAX = 128  # chain_id, node_id, gpu_uuid, reserve_id, relayer_id
FREE_TEXT_LEN_MAX = 256
PK_BYTES = {"ml-dsa-65": 1952, "ml-dsa-87": 2592}
SIG_BYTES = {"ml-dsa-65": 3309, "ml-dsa-87": 4627}

# Genesis params and their defaults (DOMAIN.md).
PARAM_DEFAULTS = {
    "min_stake": 10_000_000,
    "unbond_ms": 604_800_000,
    "slash_bps": 5000,
    "reporter_bps": 1000,
    "block_reward": 2_000_000,
    "max_block_txs": 1000,
}

# Proof of reserves: an attestation of every bridged asset each time finality passes a multiple of this height.
RESERVES_EVERY_BLOCKS = 10

# Intake.
REQUEST_BYTES_MAX = 64 * 1024 * 1024  # a block of 1,000 ML-DSA-87 transfers is ~14 MB of JSON
COMMANDS_PER_REQUEST_MAX = 10_000
# The devnet's tx pool (POST /v1/txs): txs waiting at most, and taken into one devnet block at most.
TXPOOL_TXS_MAX = 10_000
TXPOOL_BLOCK_TXS_MAX = 500  # plus the devnet's own txs, far below max_block_txs

# Read side.
PAGE_SIZE_MAX = 500
PAGE_SIZE_DEFAULT = 20
STATS_WINDOW_MAX = 10_000
GRAPHQL_DEPTH_MAX = 10
GRAPHQL_TOKENS_MAX = 2_000
GRAPHQL_ALIASES_MAX = 30

# Streams.
FOLLOWER_BATCH_EVENTS_MAX = 10_000  # memory is bounded by the bytes limit below
FOLLOWER_BATCH_BYTES_MAX = 64 * 1024 * 1024
FOLLOWER_POLL_INTERVAL_MS = 100
# Replay (projections/replay.py): batches bigger than the follower's, since every batch costs an insert per table
# (a part each, a few ms of the engine's time however few its rows); memory is bounded by the rows, held as Arrow.
REPLAY_BATCH_ROWS_MAX = 100_000
REPLAY_SECTION_BYTES = 32 * 1024 * 1024  # stored events read at once; also a worker's range of the log
READY_LAG_EVENTS_MAX = 100

# Scaled streams (streams/relay.py, streams/faust_app.py).
TOPIC_PARTITIONS = 3  # per event family; more partitions, more workers (docs/operations.md)
RELAY_BATCH_EVENTS_MAX = 2_000  # events published between two flushes and watermarks
RELAY_BATCH_BYTES_MAX = 32 * 1024 * 1024
KAFKA_MESSAGE_BYTES_MAX = 16 * 1024 * 1024  # a block of 1,000 ML-DSA-87 txs is ~14 MB; brokers must allow it
STREAM_BATCH_EVENTS_MAX = 2_000  # events a worker's agent projects and writes at once
STREAM_BATCH_WAIT_MS = 200  # a partial batch is written after this long
STREAM_SESSION_TIMEOUT_MS = 10_000  # a dead worker's partitions move after this long
STREAM_RETRY_PAUSE_MS_MAX = 5_000
STREAM_COMMIT_INTERVAL_MS = 24 * 3600 * 1000  # never, in effect: offsets live with the rows (streams/sink.py)
