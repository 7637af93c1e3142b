"""Reason codes of DOMAIN.md: business rejections are data (a closed set of strings), not exceptions."""

from __future__ import annotations

# Commands that are no command at all.
MALFORMED_COMMAND = "malformed_command"
UNKNOWN_COMMAND = "unknown_command"
PAYLOAD_TOO_LARGE = "payload_too_large"
# The devnet's tx pool (POST /v1/txs): refusals of a whole request, never receipts.
NO_BLOCK_PRODUCER = "no_block_producer"
POOL_FULL = "pool_full"

# Genesis.
INVALID_GENESIS = "invalid_genesis"
GENESIS_EXISTS = "genesis_exists"

# Blocks, in the order DOMAIN.md checks them.
BLOCK_REASONS = (
    "malformed_block",
    "unknown_chain",
    "duplicate_block",
    "unknown_parent",
    "conflicts_with_finality",
    "bad_height",
    "bad_timestamp",
    "proposer_not_active",
    "bad_signature",
    "too_many_txs",
    "malformed_tx",
    "bad_tx_root",
    "signer_mismatch",
    "bad_tx_signature",
    "amount_overflow",
)

# Transactions (receipt reasons).
TX_REASONS = {
    "transfer": ("bad_nonce", "unknown_asset", "insufficient_funds", "amount_overflow"),
    "enroll": ("bad_nonce", "stake_below_minimum", "node_id_taken", "gpu_uuid_bound", "insufficient_funds"),
    "unenroll": ("bad_nonce", "unknown_validator", "not_operator", "not_active"),
    "slash": (
        "bad_nonce", "unknown_validator", "not_slashable", "invalid_evidence", "duplicate_offence", "amount_overflow",
    ),
}

# Votes.
VOTE_REASONS = (
    "malformed_vote",
    "unknown_chain",
    "unknown_validator",
    "not_active",
    "bad_signature",
    "height_mismatch",
)

MESSAGES = {
    "malformed_command": "the command is not a JSON object with a known shape",
    "unknown_command": "the command kind is not one the ledger accepts",
    "payload_too_large": "the request body exceeds the configured limit",
    "no_block_producer": "no devnet runs here: transactions reach the ledger inside a block from a node",
    "pool_full": "the devnet's tx pool is full",
    "invalid_genesis": "the genesis is invalid",
    "genesis_exists": "a genesis for this chain_id was already accepted",
    "malformed_block": "the block is not well formed",
    "unknown_chain": "no genesis was accepted for this chain_id",
    "duplicate_block": "a block with this hash was already recorded",
    "unknown_parent": "the parent block is not known",
    "conflicts_with_finality": "the parent does not descend from the newest finalized block",
    "bad_height": "height is not parent height + 1",
    "bad_timestamp": "timestamp is earlier than the parent's",
    "proposer_not_active": "the proposer is not an active validator",
    "bad_signature": "the signature does not verify under the signer's key",
    "too_many_txs": "the block carries more txs than max_block_txs",
    "malformed_tx": "a transaction is not well formed",
    "bad_tx_root": "tx_root does not match the Merkle root of the tx ids",
    "signer_mismatch": "a transaction's signer is not the address of its key",
    "bad_tx_signature": "a transaction's signature does not verify",
    "amount_overflow": "an amount would reach 2**63",
    "malformed_vote": "the vote is not well formed",
    "unknown_validator": "no validator with this node_id",
    "not_active": "the validator is not active",
    "height_mismatch": "the vote's height differs from its block's height",
    "bad_nonce": "nonce is not the account's next nonce",
    "unknown_asset": "the asset does not exist on this chain",
    "insufficient_funds": "the balance does not cover amount and fee",
    "stake_below_minimum": "the stake is below the chain's min_stake",
    "node_id_taken": "the node_id is or was enrolled already (a node_id is never reused)",
    "gpu_uuid_bound": "the gpu_uuid is bound to a live enrollment",
    "not_operator": "the signer is not the validator's operator",
    "not_slashable": "the validator has no stake left",
    "invalid_evidence": "the two votes are not evidence of an equivocation by this validator",
    "duplicate_offence": "this (node_id, height) was already slashed",
}


class Rejection(Exception):
    """A command refused whole: a reason code from DOMAIN.md and a readable message.

    Raised inside pure validation and caught at the edge of `decide`, which returns it as data.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        self.message = message or MESSAGES.get(reason, reason)
        super().__init__(f"{reason}: {self.message}")

    def as_dict(self) -> dict[str, str]:
        return {"status": "rejected", "reason": self.reason, "message": self.message}
