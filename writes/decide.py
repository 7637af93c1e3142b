"""Pure decisions: `decide(ledger, command, verifier) -> Decision` or a `Rejection`.

Nothing here does I/O or changes the ledger: a decision is a list of event drafts (class + payload)
that the service seals into the hash chain, saves atomically and only then folds. Signature checks go
through the injected verifier, a deterministic function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from accelerators import backend
from accelerators.verify import BatchVerifier
from schemas import commands
from schemas.canonical import block_hash, canonical_bytes, genesis_hash
from schemas.events import (
    BlockApplied,
    BlockFinalized,
    BlockReapplied,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    GenesisAccepted,
    LedgerEvent,
    ReservesAttested,
    VoteAccepted,
)
from schemas.reasons import Rejection
from writes import reserves
from writes.inspect import Inspection
from writes.state import ACTIVE, BlockInfo, BranchView, ChainState, Ledger, stakes_after
from writes.txs import apply_txs

Draft = tuple[type[LedgerEvent], dict[str, Any]]


@dataclass
class Decision:
    events: list[Draft] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attestor:
    """What proof of reserves needs beside the log: the secret that blinds leaf ids (writes/reserves.py) and
    the attestation period (an attestation each time finality passes a multiple of it; 0: on request only)."""

    secret: bytes
    every_blocks: int


def decide(
    ledger: Ledger,
    command: Any,
    verifier: BatchVerifier,
    inspection: Inspection | None = None,
    attestor: Attestor | None = None,
) -> Decision:
    """Raises Rejection (reason code + message) when the command is refused whole.

    `inspection`, when given, is the already started check of this block's txs (see writes/inspect.py).
    """
    kind = commands.command_kind(command)
    if kind == "genesis":
        return decide_genesis(ledger, command)
    if kind == "block":
        return decide_block(ledger, command, verifier, inspection, attestor)
    if kind == "attest_reserves":
        return decide_attestation(ledger, command, attestor)
    return decide_vote(ledger, command, verifier, attestor)


def decide_genesis(ledger: Ledger, genesis: Mapping[str, Any]) -> Decision:
    chain_id = genesis.get("chain_id")
    if isinstance(chain_id, str) and chain_id in ledger.chains:
        raise Rejection("genesis_exists", f"chain {chain_id!r} already has a genesis")
    facts = commands.check_genesis(genesis)
    ghash = genesis_hash(genesis)
    payload = {
        "chain_id": chain_id, "block_hash": ghash, "genesis": dict(genesis), "params": facts["params"],
        "timestamp_ms": genesis["timestamp_ms"], "allocations": facts["allocations"],
        "validators": facts["validators"], "relayers": facts["relayers"],
    }
    result = {"status": "accepted", "kind": "genesis", "chain_id": chain_id, "hash": ghash, "height": 0}
    return Decision([(GenesisAccepted, payload)], result)


# ---------------------------------------------------------------------------------------------- blocks


def decide_block(
    ledger: Ledger,
    block: Mapping[str, Any],
    verifier: BatchVerifier,
    inspection: Inspection | None = None,
    attestor: Attestor | None = None,
) -> Decision:
    """A valid block extends the canonical chain, is recorded on a side branch, or makes its branch canonical
    (it is higher than the tip, or votes that came before it finalize it): DOMAIN.md's fork choice."""
    commands.check_block_shape(block)
    chain = ledger.chains.get(block["chain_id"])
    if chain is None:
        raise Rejection("unknown_chain", f"no genesis for chain {block['chain_id']!r}")
    bhash = block_hash(block)
    parent = _check_header(chain, block, bhash)
    branch = BranchView(chain, parent)
    _check_proposer(branch, block, verifier)
    tx_ids = _check_txs(chain, block, verifier, inspection)
    receipts, effects = apply_txs(branch, block)
    payload = {
        "chain_id": chain.chain_id, "block_hash": bhash, "height": block["height"], "parent": parent.hash,
        "proposer": block["proposer"], "operator": branch.validator(block["proposer"]).operator,  # type: ignore[union-attr]
        "timestamp_ms": block["timestamp_ms"], "block": dict(block), "tx_ids": tx_ids,
        "receipts": receipts, "effects": effects,
    }
    # Votes that arrived before the block may finalize it at once.
    early = {n for n, h in chain.pending_votes.get(bhash, set()) if h == block["height"]}
    info = _block_info_after(branch, payload, early)
    finality = _finality(chain, info, head=info)
    extends_tip = parent.hash == chain.tip.hash
    canonical = extends_tip or info.height > chain.tip.height or finality is not None
    events: list[Draft] = []
    reorg = None
    if canonical and not extends_tip:
        cause = "longer_branch" if info.height > chain.tip.height else "finality"
        events += _reorganize(chain, parent, cause, new_block=info)
        reorg = _reorg_result(events[0][1])
    events.append((BlockApplied if canonical else BlockRecorded, payload))
    if finality:
        events.append(finality)
        events += _scheduled_attestations(chain, finality, attestor, _Arriving(info.hash, branch, effects))
    result = {
        "status": "accepted", "kind": "block", "chain_id": chain.chain_id, "hash": bhash,
        "height": block["height"], "tx_ids": tx_ids, "canonical": canonical, "reorg": reorg,
        # Blocks that were never canonical have no receipts (DOMAIN.md); a side block gets them if it wins.
        "receipts": [
            {"tx_id": t, "status": s, "reason": r, "height": block["height"], "index": i}
            for i, (t, (s, r)) in enumerate(zip(tx_ids, receipts, strict=True))
        ] if canonical else [],
        "finalized_height": finality[1]["height"] if finality else chain.finalized_height,
    }
    return Decision(events, result)


def _check_header(chain: ChainState, block: Mapping[str, Any], bhash: str) -> BlockInfo:
    """Header rules in DOMAIN.md's order, up to the timestamp; the parent is returned."""
    if bhash in chain.blocks:
        raise Rejection("duplicate_block", f"block {bhash} is already recorded")
    parent = chain.blocks.get(block["parent"])
    if parent is None:
        raise Rejection("unknown_parent", f"parent {block['parent']} is not known on chain {chain.chain_id!r}")
    if not chain.descends_from(parent, chain.finalized):
        raise Rejection(
            "conflicts_with_finality",
            f"parent {parent.hash} at height {parent.height} does not descend from the finalized block"
            f" {chain.finalized.hash} at height {chain.finalized_height}",
        )
    if block["height"] != parent.height + 1:
        raise Rejection("bad_height", f"height {block['height']} is not parent height {parent.height} + 1")
    if block["timestamp_ms"] < parent.timestamp_ms:
        raise Rejection(
            "bad_timestamp", f"timestamp_ms {block['timestamp_ms']} is earlier than the parent's {parent.timestamp_ms}"
        )
    return parent


def _check_proposer(branch: BranchView, block: Mapping[str, Any], verifier: BatchVerifier) -> None:
    """The proposer must be active in the state after the parent, on its own branch, and have signed."""
    validator = branch.validator(block["proposer"])
    if validator is None or validator.phase != ACTIVE:
        raise Rejection("proposer_not_active", f"proposer {block['proposer']!r} is not an active validator")
    header_msg = canonical_bytes({k: v for k, v in block.items() if k != "txs"}, drop_sig=True)
    if not verifier.verify_one(validator.alg, validator.pk, header_msg, bytes.fromhex(block["sig"])):
        raise Rejection("bad_signature", f"header signature does not verify under {block['proposer']!r}'s key")


def _reorganize(chain: ChainState, target: BlockInfo, cause: str, new_block: BlockInfo | None = None) -> list[Draft]:
    """The events that make `target` the canonical tip (then `new_block`, whose BlockApplied follows)."""
    undo, ancestor, redo = chain.path(target)
    if not undo:
        raise AssertionError(f"{target.hash} descends from the tip: that is an extension, not a reorganization")
    applied = [[b.height, b.hash] for b in redo]
    if new_block is not None:
        applied.append([new_block.height, new_block.hash])
    new_tip = applied[-1]
    header = {
        "chain_id": chain.chain_id, "cause": cause, "ancestor_height": ancestor.height,
        "ancestor_hash": ancestor.hash, "ancestor_timestamp_ms": ancestor.timestamp_ms,
        "old_tip": [chain.tip.height, chain.tip.hash], "new_tip": new_tip, "depth": len(undo),
        "reverted": [[b.height, b.hash] for b in undo], "applied": applied,
    }
    drafts: list[Draft] = [(ChainReorganized, header)]
    drafts += [(BlockReverted, dict(_summary_of(b))) for b in undo]
    drafts += [(BlockReapplied, dict(_summary_of(b))) for b in redo]
    return drafts


def _summary_of(block: BlockInfo) -> dict[str, Any]:
    if block.summary is None:
        raise AssertionError(f"block {block.hash} cannot move: it is final or off the final branch")
    return block.summary


def _reorg_result(header: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("cause", "depth", "ancestor_height", "ancestor_hash", "old_tip", "new_tip")
    return {k: header[k] for k in keys}


def _best_tip_containing(chain: ChainState, block: BlockInfo) -> BlockInfo:
    """Fork choice among the branches through `block`: the greatest height, then the tip accepted first."""
    candidates = [chain.blocks[h] for h in chain.unsettled]
    best = block
    for candidate in candidates:
        if (candidate.height, -candidate.order) > (best.height, -best.order) and chain.descends_from(
            candidate, block
        ):
            best = candidate
    return best


def _check_txs(
    chain: ChainState, block: Mapping[str, Any], verifier: BatchVerifier, inspection: Inspection | None
) -> list[str]:
    txs = block["txs"]
    limit = chain.params["max_block_txs"]
    if len(txs) > limit:
        raise Rejection("too_many_txs", f"{len(txs)} txs exceed max_block_txs {limit}")
    for i, tx in enumerate(txs):
        commands.check_tx_shape(tx, i, block["chain_id"])
    if inspection is None or inspection.txs is not txs:
        inspection = Inspection(txs, verifier)
    checks = inspection.result()
    tx_ids = [c.tx_id for c in checks]
    root = backend.tx_root(tx_ids)  # the blake3 package for a block's few thousand leaves; JAX where it pays
    if root != block["tx_root"]:
        raise Rejection("bad_tx_root", f"tx_root {block['tx_root']} differs from the txs' root {root}")
    for i, check in enumerate(checks):
        if not check.signer_ok:
            raise Rejection("signer_mismatch", f"tx {i}: signer {txs[i]['signer']} is not the address of its key")
        if not check.sig_ok:
            raise Rejection("bad_tx_signature", f"tx {i}: signature does not verify")
    return tx_ids


def _block_info_after(chain: BranchView, payload: Mapping[str, Any], voters: set[str]) -> BlockInfo:
    """The block as `evolve` will record it (the validator set after it), to test finality before saving."""
    stakes = stakes_after(chain.active_stakes, payload["effects"])
    return BlockInfo(
        payload["block_hash"], payload["height"], payload["parent"], payload["timestamp_ms"],
        payload["proposer"], stakes, sum(stakes.values()), set(voters),
    )


def _finality(chain: ChainState, block: BlockInfo, head: BlockInfo) -> Draft | None:
    """A BlockFinalized draft if `block`'s votes finalize it (and its ancestors) now, else None.

    Only a block on the branch of every final block can become final: once a block is final, votes for a
    block that does not descend from it are kept but never count (DOMAIN.md)."""
    if block.height <= chain.finalized_height or not block.is_final_by_votes():
        return None
    if not chain.descends_from(chain.blocks[block.parent], chain.finalized):
        return None
    newly = [[block.height, block.hash]]
    cursor = block
    while cursor.height - 1 > chain.finalized_height:
        cursor = chain.blocks[cursor.parent]
        newly.append([cursor.height, cursor.hash])
    newly.reverse()
    payload = {
        "chain_id": chain.chain_id, "block_hash": block.hash, "height": block.height,
        "voting_stake": block.voting_stake(), "total_stake": block.total_stake, "finalized": newly,
        "head_height": head.height, "head_timestamp_ms": head.timestamp_ms,
    }
    return (BlockFinalized, payload)


# ----------------------------------------------------------------------------------------------- votes


def decide_vote(
    ledger: Ledger, vote: Mapping[str, Any], verifier: BatchVerifier, attestor: Attestor | None = None
) -> Decision:
    commands.check_vote_shape(vote)
    chain = ledger.chains.get(vote["chain_id"])
    if chain is None:
        raise Rejection("unknown_chain", f"no genesis for chain {vote['chain_id']!r}")
    node_id, height, target = vote["node_id"], vote["height"], vote["block_hash"]
    validator = chain.validators.get(node_id)
    if validator is None:
        raise Rejection("unknown_validator", f"no validator {node_id!r} on chain {chain.chain_id!r}")
    if validator.phase != ACTIVE:
        raise Rejection("not_active", f"validator {node_id!r} is {validator.phase}")
    message = canonical_bytes(vote, drop_sig=True)
    if not verifier.verify_one(validator.alg, validator.pk, message, bytes.fromhex(vote["sig"])):
        raise Rejection("bad_signature", f"vote signature does not verify under {node_id!r}'s key")
    block = chain.blocks.get(target)
    if block is not None and block.height != height:
        raise Rejection("height_mismatch", f"vote height {height} differs from block height {block.height}")
    result = {
        "status": "accepted", "kind": "vote", "chain_id": chain.chain_id, "node_id": node_id,
        "height": height, "block_hash": target, "counted": block is not None, "duplicate": False,
        "finalized_height": chain.finalized_height, "reorg": None,
    }
    if block is not None:
        already = node_id in block.voters
    else:
        already = (node_id, height) in chain.pending_votes.get(target, set())
    if already:
        return Decision([], {**result, "duplicate": True})
    payload = {"chain_id": chain.chain_id, "node_id": node_id, "height": height, "block_hash": target,
               "vote": dict(vote)}
    events: list[Draft] = [(VoteAccepted, payload)]
    if block is not None:
        with_vote = BlockInfo(block.hash, block.height, block.parent, block.timestamp_ms, block.proposer,
                              block.stakes, block.total_stake, block.voters | {node_id})
        head = chain.tip
        if not chain.is_canonical(block) and _finality(chain, with_vote, head) is not None:
            # Finalizing a block off the canonical chain reorganizes onto the best branch through it.
            head = _best_tip_containing(chain, block)
            events += _reorganize(chain, head, "finality")
            result["reorg"] = _reorg_result(events[1][1])
        finality = _finality(chain, with_vote, head=head)
        if finality:
            events.append(finality)
            events += _scheduled_attestations(chain, finality, attestor)
            result["finalized_height"] = finality[1]["height"]
    return Decision(events, result)


# ------------------------------------------------------------------------------------ proof of reserves


@dataclass(frozen=True)
class _Arriving:
    """A block being decided: not in the state yet, so the state after it is its branch plus its effects."""

    hash: str
    branch: BranchView
    effects: dict[str, Any]


def _scheduled_attestations(
    chain: ChainState, finality: Draft, attestor: Attestor | None, arriving: _Arriving | None = None
) -> list[Draft]:
    """An attestation of every bridged asset at each newly final height that is a multiple of the period."""
    if attestor is None or attestor.every_blocks <= 0:
        return []
    drafts: list[Draft] = []
    for height, final_hash in finality[1]["finalized"]:
        if height % attestor.every_blocks == 0:
            drafts += _attest(chain, height, final_hash, attestor, "schedule", arriving)
    return drafts


def _attest(
    chain: ChainState, height: int, final_hash: str, attestor: Attestor, cause: str,
    arriving: _Arriving | None = None, assets: Sequence[str] | None = None,
) -> list[Draft]:
    """ReservesAttested drafts for the state after `final_hash` (every bridged asset there, or `assets`)."""
    if arriving is not None and arriving.hash == final_hash:
        view, extra = arriving.branch, arriving.effects
    else:
        view, extra = BranchView(chain, chain.blocks[final_hash]), {}
    totals = {asset: list(view.bridge_totals(asset)) for asset in view.bridged_assets()}
    for asset, *deltas in extra.get("bridge", ()):
        base = totals.get(asset) or list(view.bridge_totals(asset))
        totals[asset] = [t + d for t, d in zip(base, deltas, strict=True)]
    drafts: list[Draft] = []
    for asset in sorted(assets if assets is not None else totals):
        if asset not in totals or totals[asset][0] <= 0:
            continue
        held = view.holdings(asset)
        for address, balance_asset, delta in extra.get("balances", ()):
            if balance_asset == asset:
                held[address] = held.get(address, 0) + delta
        tree = reserves.build_tree(attestor.secret, chain.chain_id, asset, height, held.items())
        drafts.append((ReservesAttested, reserves.attestation(tree, final_hash, totals[asset], cause)))
    return drafts


def decide_attestation(ledger: Ledger, command: Mapping[str, Any], attestor: Attestor | None) -> Decision:
    """`{"kind": "attest_reserves", "chain_id", "asset"}`: attest one bridged asset at the newest final height,
    unless it is attested there already (then accepted, `duplicate`, nothing appended)."""
    commands.check_attestation_shape(command)
    chain = ledger.chains.get(command["chain_id"])
    if chain is None:
        raise Rejection("unknown_chain", f"no genesis for chain {command['chain_id']!r}")
    if attestor is None:
        raise Rejection("unknown_command", "this ledger runs without a proof-of-reserves secret")
    final = chain.finalized
    asset = command["asset"]
    result = {
        "status": "accepted", "kind": "attest_reserves", "chain_id": chain.chain_id, "asset": asset,
        "height": final.height, "block_hash": final.hash, "duplicate": False,
    }
    if (asset, final.height) in chain.attested:
        return Decision([], {**result, "duplicate": True})
    drafts = _attest(chain, final.height, final.hash, attestor, "request", assets=[asset])
    if not drafts:
        raise Rejection("unknown_asset", f"{asset!r} is not a bridged asset at the finalized height {final.height}")
    payload = drafts[0][1]
    return Decision(drafts, {**result, "root": payload["root"], "ratio": payload["ratio"]})
