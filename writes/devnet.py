"""The devnet behind `tally up`: a genesis, one signed block per interval, and votes that finalize it.

Pure builders come first (keys, genesis, transfers, blocks, votes: no clock, no I/O, randomness passed in);
`Devnet` at the bottom is the thin loop that reads the ledger's head, builds the next block with them and
submits it. Keys are derived from one seed kept in the data directory, so a restart signs with the same keys
and resumes from the ledger's head. Signing uses `cryptography` (schemas.signing), never pqcrypto.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from schemas import build
from schemas.canonical import block_hash, canonical_bytes, genesis_hash, header_of
from schemas.limits import PARAM_DEFAULTS
from schemas.signing import KeyPair

log = logging.getLogger("tally.devnet")

CHAIN_ID = "devnet"
ASSET = "CELL"
MICRO = 1_000_000
SEED_FILE = "devnet-seed"
ACCOUNT_FUNDS = 1_000_000 * MICRO  # each devnet account starts with 1M CELL
TRANSFER_AMOUNT_MAX = 5 * MICRO
TRANSFER_FEE = 1_000  # 0.001 CELL
BAD_TX_PER_MILLE = 100  # about one tx in ten is built to be rejected

Intent = Literal["applied", "bad_nonce", "insufficient_funds"]


@dataclass(frozen=True)
class DevnetValidator:
    node_id: str
    key: KeyPair
    operator: str  # address of the devnet account paid for its blocks
    gpu_uuid: str
    stake: int


@dataclass(frozen=True)
class DevnetKeys:
    validators: tuple[DevnetValidator, ...]
    accounts: tuple[KeyPair, ...]

    @property
    def total_stake(self) -> int:
        return sum(v.stake for v in self.validators)

    def proposer(self, height: int) -> DevnetValidator:
        """Round robin over the validators, by height."""
        return self.validators[height % len(self.validators)]


@dataclass(frozen=True)
class PlannedTransfer:
    """A transfer the devnet will sign, and the receipt it is built to get."""

    sender: int  # index into DevnetKeys.accounts
    to: str
    amount: int
    fee: int
    nonce: int
    intent: Intent


class LedgerView(Protocol):
    """The read-only write-side state the devnet needs (LedgerService has it)."""

    def head(self, chain_id: str) -> tuple[int, str, int] | None: ...

    def next_nonce(self, chain_id: str, address: str) -> int: ...

    def balance(self, chain_id: str, address: str, asset: str) -> int: ...


class Submitter(LedgerView, Protocol):
    def submit(self, obj: Any) -> dict[str, Any]: ...

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]: ...


# ---------------------------------------------------------------- pure builders


def derive_keys(seed: bytes, *, validators: int = 4, accounts: int = 20) -> DevnetKeys:
    """Deterministic ML-DSA-65 keys: the same seed always gives the same devnet."""
    if validators < 1 or accounts < max(2, validators):
        raise ValueError("a devnet needs at least one validator and as many accounts (at least two)")
    account_keys = tuple(KeyPair.from_seed(seed + f":account:{i}".encode()) for i in range(accounts))
    vals = tuple(
        DevnetValidator(
            node_id=f"devnet-node-{i}",
            key=KeyPair.from_seed(seed + f":validator:{i}".encode()),
            operator=account_keys[i].address,  # rewards flow back into the transfer pool
            gpu_uuid=f"GPU-devnet-{i}",
            stake=(100 + 10 * i) * MICRO,  # unequal stakes, all far above min_stake
        )
        for i in range(validators)
    )
    return DevnetKeys(validators=vals, accounts=account_keys)


def devnet_genesis(
    seed: bytes,
    chain_id: str = CHAIN_ID,
    validators: int = 4,
    accounts: int = 20,
    timestamp_ms: int = 0,
) -> tuple[dict[str, Any], DevnetKeys]:
    """The devnet's genesis and the keys behind it."""
    keys = derive_keys(seed, validators=validators, accounts=accounts)
    params = dict(PARAM_DEFAULTS)  # explicit, so the genesis reads the same whatever the defaults become
    assert all(v.stake >= params["min_stake"] for v in keys.validators)
    genesis = {
        "kind": "genesis",
        "chain_id": chain_id,
        "timestamp_ms": timestamp_ms,
        "params": params,
        "allocations": [{"address": k.address, "asset": ASSET, "amount": ACCOUNT_FUNDS} for k in keys.accounts],
        "validators": [
            {
                "node_id": v.node_id,
                "operator": v.operator,
                "key": v.key.key,
                "gpu_uuid": v.gpu_uuid,
                "stake": v.stake,
            }
            for v in keys.validators
        ],
        "relayers": [],
    }
    return genesis, keys


def plan_transfers(
    rng: random.Random,
    accounts: Sequence[str],
    nonces: Sequence[int],
    balances: Sequence[int],
    count: int,
    *,
    bad_per_mille: int = BAD_TX_PER_MILLE,
) -> list[PlannedTransfer]:
    """Random CELL transfers between accounts, nonces and funds tracked through the block.

    `nonces` and `balances` are the ledger's figures before the block, per account index. A transfer built
    to be rejected does not advance the local nonce or move funds, exactly as the ledger treats it.
    """
    nonce, balance = list(nonces), list(balances)
    plans: list[PlannedTransfer] = []
    for _ in range(count):
        sender = rng.randrange(len(accounts))
        receiver = rng.choice([i for i in range(len(accounts)) if i != sender])
        roll = rng.randrange(1000)
        if roll < bad_per_mille // 2:
            # a nonce from the future: bad_nonce whatever the funds
            plans.append(PlannedTransfer(sender, accounts[receiver], 1, TRANSFER_FEE, nonce[sender] + 7, "bad_nonce"))
            continue
        if roll < bad_per_mille:
            # right nonce, one micro-unit more than the sender holds: insufficient_funds
            amount = balance[sender] + 1
            plans.append(PlannedTransfer(sender, accounts[receiver], amount, 0, nonce[sender], "insufficient_funds"))
            continue
        amount = rng.randint(1, TRANSFER_AMOUNT_MAX)
        if balance[sender] < amount + TRANSFER_FEE:
            continue  # never build an accidental rejection
        plans.append(PlannedTransfer(sender, accounts[receiver], amount, TRANSFER_FEE, nonce[sender], "applied"))
        nonce[sender] += 1
        balance[sender] -= amount + TRANSFER_FEE
        balance[receiver] += amount
    return plans


def build_transfer(
    sender: KeyPair, *, chain_id: str, to: str, amount: int, fee: int, nonce: int, asset: str = ASSET
) -> dict[str, Any]:
    """A signed transfer in DOMAIN.md's wire format."""
    return build.transfer(chain_id, sender, to, amount, nonce=nonce, fee=fee, asset=asset)


def sign_planned(keys: DevnetKeys, chain_id: str, plans: Sequence[PlannedTransfer]) -> list[dict[str, Any]]:
    return [
        build_transfer(keys.accounts[p.sender], chain_id=chain_id, to=p.to, amount=p.amount, fee=p.fee, nonce=p.nonce)
        for p in plans
    ]


def build_block(
    proposer: DevnetValidator,
    *,
    chain_id: str,
    height: int,
    parent: str,
    timestamp_ms: int,
    txs: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """A block whose header (the block without `txs`) is signed by the proposer's validator key."""
    return build.block(chain_id, height, parent, proposer.node_id, proposer.key, timestamp_ms, txs)


def voters_for(keys: DevnetKeys, height: int) -> list[DevnetValidator]:
    """The fewest validators, rotating from `height`, whose stake is more than 2/3 of the total."""
    n = len(keys.validators)
    chosen: list[DevnetValidator] = []
    for i in range(n):
        chosen.append(keys.validators[(height + i) % n])
        if 3 * sum(v.stake for v in chosen) > 2 * keys.total_stake:
            return chosen
    raise AssertionError("all validators together always hold more than 2/3 of the stake")


def build_votes(keys: DevnetKeys, *, chain_id: str, height: int, block_hash: str) -> list[dict[str, Any]]:
    """Votes for one block from enough validators (> 2/3 of the stake) to finalize it."""
    return [build.vote(chain_id, v.node_id, v.key, height, block_hash) for v in voters_for(keys, height)]


def next_block(
    keys: DevnetKeys,
    view: LedgerView,
    rng: random.Random,
    *,
    chain_id: str,
    now_ms: int,
    txs_per_block: int,
) -> tuple[dict[str, Any], list[PlannedTransfer]]:
    """The block on top of the ledger's current head, with freshly planned transfers."""
    head = view.head(chain_id)
    if head is None:
        raise LookupError(f"chain {chain_id!r} has no genesis yet")
    height, parent, parent_ts = head
    addresses = [k.address for k in keys.accounts]
    nonces = [view.next_nonce(chain_id, a) for a in addresses]
    balances = [view.balance(chain_id, a, ASSET) for a in addresses]
    plans = plan_transfers(rng, addresses, nonces, balances, txs_per_block)
    block = build_block(
        keys.proposer(height + 1),
        chain_id=chain_id,
        height=height + 1,
        parent=parent,
        timestamp_ms=max(now_ms, parent_ts),  # a clock that stepped back must not make the block invalid
        txs=sign_planned(keys, chain_id, plans),
    )
    return block, plans


@dataclass(frozen=True)
class OfflineChain:
    """A devnet chain built without a ledger: the commands in submission order and each block's intents."""

    keys: DevnetKeys
    commands: list[dict[str, Any]]  # genesis, then per block: the block, then its votes
    intents: list[list[Intent]]  # per block, the receipt each tx is built to get


def build_chain(
    seed: bytes,
    *,
    blocks: int,
    txs_per_block: int,
    rng: random.Random,
    start_ms: int = 1_700_000_000_000,
    interval_ms: int = 1000,
    chain_id: str = CHAIN_ID,
) -> OfflineChain:
    """Genesis, blocks and votes as the devnet would submit them, tracking nonces and CELL balances here
    (transfers, fees, the proposer's reward) instead of asking the ledger. For files and benchmarks."""
    genesis, keys = devnet_genesis(seed, chain_id, timestamp_ms=start_ms)
    addresses = [k.address for k in keys.accounts]
    nonces, balances = [0] * len(addresses), [ACCOUNT_FUNDS] * len(addresses)
    commands: list[dict[str, Any]] = [genesis]
    intents: list[list[Intent]] = []
    parent = genesis_hash(genesis)
    for height in range(1, blocks + 1):
        plans = plan_transfers(rng, addresses, nonces, balances, txs_per_block)
        proposer = keys.proposer(height)
        block = build_block(
            proposer,
            chain_id=chain_id,
            height=height,
            parent=parent,
            timestamp_ms=start_ms + height * interval_ms,
            txs=sign_planned(keys, chain_id, plans),
        )
        fees = 0
        for p in plans:
            if p.intent == "applied":
                receiver = addresses.index(p.to)
                nonces[p.sender] += 1
                balances[p.sender] -= p.amount + p.fee
                balances[receiver] += p.amount
                fees += p.fee
        balances[addresses.index(proposer.operator)] += genesis["params"]["block_reward"] + fees
        parent = block_hash(block)
        commands.append(block)
        commands.extend(build_votes(keys, chain_id=chain_id, height=height, block_hash=parent))
        intents.append([p.intent for p in plans])
    return OfflineChain(keys, commands, intents)


def header_bytes(block: dict[str, Any]) -> bytes:
    """What the proposer signs: the canonical header without its sig."""
    return canonical_bytes(header_of(block), drop_sig=True)


# ---------------------------------------------------------------- I/O: seed file and the loop


def load_or_create_seed(data_dir: Path) -> bytes:
    """The devnet seed under the data dir, created (atomically, fsynced) at first start."""
    path = data_dir / SEED_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    seed = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(seed.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a crash leaves either no seed or the whole seed, never half of one
    return seed


class Devnet:
    """Submits the genesis once, then one block per interval on the current head, then its votes."""

    def __init__(
        self,
        service: Submitter,
        data_dir: Path,
        *,
        block_interval_ms: int = 1000,
        txs_per_block: int = 20,
        chain_id: str = CHAIN_ID,
    ) -> None:
        self.service = service
        self.data_dir = Path(data_dir)
        self.block_interval_ms = block_interval_ms
        self.txs_per_block = txs_per_block
        self.chain_id = chain_id
        self.blocks_accepted = 0
        self.blocks_rejected = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._keys: DevnetKeys | None = None
        self._rng = random.Random()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("devnet already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tally-devnet", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def ensure_genesis(self) -> DevnetKeys:
        """Submit the genesis unless the chain already has one; either way, the keys of this devnet."""
        seed = load_or_create_seed(self.data_dir)
        genesis, keys = devnet_genesis(seed, self.chain_id, timestamp_ms=_now_ms())
        if self.service.head(self.chain_id) is None:
            result = self.service.submit(genesis)
            if result.get("status") != "accepted" and result.get("reason") != "genesis_exists":
                raise RuntimeError(f"devnet genesis refused: {result}")
            log.info("devnet genesis %s", result.get("hash"))
        else:
            self._vote_for_head(keys)  # a crash may have come between a block and its votes
        return keys

    def step(self) -> dict[str, Any]:
        """Build, submit and vote for one block; returns the block's result."""
        if self._keys is None:
            self._keys = self.ensure_genesis()
        block, _ = next_block(
            self._keys,
            self.service,
            self._rng,
            chain_id=self.chain_id,
            now_ms=_now_ms(),
            txs_per_block=self.txs_per_block,
        )
        result = self.service.submit(block)
        if result.get("status") != "accepted":
            self.blocks_rejected += 1
            hint = ""
            if result.get("reason") in ("bad_signature", "proposer_not_active"):
                hint = f" (is {self.data_dir / SEED_FILE} the seed this chain's genesis was made from?)"
            log.warning(
                "devnet block %s refused: %s: %s%s", block["height"], result.get("reason"), result.get("message"), hint
            )
            return result
        self.blocks_accepted += 1
        votes = build_votes(self._keys, chain_id=self.chain_id, height=block["height"], block_hash=block_hash(block))
        self.service.submit_many(votes)
        return result

    def _vote_for_head(self, keys: DevnetKeys) -> None:
        head = self.service.head(self.chain_id)
        if head is not None and head[0] > 0:
            height, hash_, _ = head
            self.service.submit_many(build_votes(keys, chain_id=self.chain_id, height=height, block_hash=hash_))

    def _run(self) -> None:
        interval_s = self.block_interval_ms / 1000
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the devnet must outlive one bad tick; the log says what happened
                self.errors += 1
                log.exception("devnet step failed")
            next_at = max(next_at + interval_s, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
