"""The devnet behind `tally up`: a genesis, one signed block per interval, and votes that finalize it.

Now and then (once in every `fork_period_blocks` heights, at a place drawn from the seed) a competing proposer
makes a short fork win: the usual block goes in without its votes, then another validator proposes two blocks on
its parent, the second of which makes that branch longer, and the ledger reorganizes (depth 1); votes then
finalize the new branch. The replaced block is never voted for, since a final block can never be reverted.

Validators come and go (DOMAIN.md, Validators and Slashing), at heights drawn from the seed like the forks: now
and then an enrollment of a new devnet validator (`devnet-node-K`, its key derived from the seed so the devnet votes
with it from its first block), an unenrollment of an enrolled one, and an equivocation: a devnet validator signs a
second vote at a height for a block that does not exist, and a reporter slashes it with the two votes in the next
block (applied); about half of the offences are reported a second time by another account, with the votes swapped
(rejected: `duplicate_offence`). The devnet votes with every active validator it has keys for, and keeps more than
2/3 of the active stake in its hands: it slashes or unenrolls only what leaves it that, and enrolls more stake at
once when others' stake (enrolled through the CLI) takes it below.

The bridge moves too (DOMAIN.md, Bridge reserves): the genesis names RELAYERS relayers with keys derived from the
seed; now and then a relayer deposits a bridged asset (USDC, EURC) to a devnet account (the CLI's reserved ones
included), now and then a devnet account asks to withdraw part of what it holds, and every withdrawal that waited
SETTLE_AFTER_BLOCKS blocks in the queue (the CLI's too) is confirmed by a relayer, or rejected (about one in five:
the owner is refunded). Reserves attestations then follow finality (TALLY_RESERVES_EVERY_BLOCKS).

Transactions from the tx pool (`POST /v1/txs`, writes/txpool.py) go into the next block, after the devnet's own
validator txs and before its transfers. The last `RESERVED_ACCOUNTS` funded accounts are never signed for by the
devnet: they are for people trying the CLI (`tally devnet-key`), whose nonces are theirs alone.

Pure builders come first (keys, genesis, transfers, blocks, votes, forks: no clock, no I/O, randomness passed in);
`Devnet` at the bottom is the thin loop that reads the ledger's head, builds the next block with them and
submits it. Keys are derived from one seed kept in the data directory, so a restart signs with the same keys
and resumes from the ledger's head. Signing uses `cryptography` (schemas.signing), never pqcrypto.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from schemas import build
from schemas.canonical import block_hash, canonical_bytes, genesis_hash, hash_hex, header_of
from schemas.limits import PARAM_DEFAULTS, TXPOOL_BLOCK_TXS_MAX
from schemas.signing import KeyPair
from writes.state import ACTIVE
from writes.txpool import TxPool
from writes.txs import slash_amounts

log = logging.getLogger("tally.devnet")

CHAIN_ID = "devnet"
ASSET = "CELL"
MICRO = 1_000_000
SEED_FILE = "devnet-seed"
ACCOUNT_FUNDS = 1_000_000 * MICRO  # each devnet account starts with 1M CELL
TRANSFER_AMOUNT_MAX = 5 * MICRO
TRANSFER_FEE = 1_000  # 0.001 CELL
BAD_TX_PER_MILLE = 100  # about one tx in ten is built to be rejected
FORK_PERIOD_BLOCKS = 20  # a competing branch wins once every 20 heights (0: never)
GENESIS_VALIDATORS = 4
ACCOUNTS = 20  # funded at genesis
RESERVED_ACCOUNTS = 4  # the last funded accounts: for the CLI, never signed for by the devnet
# Validator life (0: never). Heights are drawn from the seed, once in every window of the period.
ENROLL_PERIOD_BLOCKS = 10
UNENROLL_PERIOD_BLOCKS = 25
EQUIVOCATION_PERIOD_BLOCKS = 15
VALIDATORS_ACTIVE_MAX = 8  # devnet validators voting on every block; enrollments wait below it
VALIDATORS_ACTIVE_MIN = 2  # fewer, and the devnet enrolls at once
ENROLL_STAKE_MIN = 50 * MICRO
ENROLL_STAKE_SPREAD = 100 * MICRO
OPERATOR_RESERVE = 1 * MICRO  # an operator keeps at least this much CELL after bonding a stake
# The bridge: relayers in the genesis deposit now and then and settle the withdrawals waiting for them.
RELAYERS = 2
BRIDGED_ASSETS = ("USDC", "EURC")
DEPOSIT_PERIOD_BLOCKS = 2
WITHDRAW_PERIOD_BLOCKS = 3
DEPOSIT_UNITS_MAX = 1_000  # a deposit is 1 .. 1,000 units of its asset
SETTLE_AFTER_BLOCKS = 2  # a withdrawal waits this many blocks in the queue before a relayer settles it
SETTLEMENTS_PER_BLOCK_MAX = 8
REJECT_ONE_IN = 5  # a relayer refuses about one withdrawal in five (the owner is refunded)
_NODE_ID = re.compile(r"devnet-node-(0|[1-9][0-9]{0,8})")

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

    def validators(self, chain_id: str) -> list[Any]: ...  # writes.state.Validator, any phase


class Submitter(LedgerView, Protocol):
    def submit(self, obj: Any) -> dict[str, Any]: ...

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]: ...


# ---------------------------------------------------------------- pure builders


def derive_keys(seed: bytes, *, validators: int = GENESIS_VALIDATORS, accounts: int = ACCOUNTS) -> DevnetKeys:
    """Deterministic ML-DSA-65 keys: the same seed always gives the same devnet."""
    if validators < 1 or accounts < max(2, validators):
        raise ValueError("a devnet needs at least one validator and as many accounts (at least two)")
    account_keys = tuple(account_key(seed, i) for i in range(accounts))
    vals = tuple(
        DevnetValidator(
            node_id=f"devnet-node-{i}",
            key=validator_key(seed, i),
            operator=account_keys[i].address,  # rewards flow back into the transfer pool
            gpu_uuid=f"GPU-devnet-{i}",
            stake=(100 + 10 * i) * MICRO,  # unequal stakes, all far above min_stake
        )
        for i in range(validators)
    )
    return DevnetKeys(validators=vals, accounts=account_keys)


def account_seed(seed: bytes, index: int) -> bytes:
    """The 32-byte key seed of devnet account `index` (what `tally devnet-key` writes to a key file)."""
    material = seed + f":account:{index}".encode()
    return material if len(material) == 32 else hashlib.sha256(material).digest()  # KeyPair.from_seed's rule


def account_key(seed: bytes, index: int) -> KeyPair:
    return KeyPair.from_seed(account_seed(seed, index))  # = KeyPair.from_seed(seed + b":account:i"): hashed down


@functools.lru_cache(maxsize=4096)
def validator_key(seed: bytes, index: int) -> KeyPair:
    """The key of `devnet-node-{index}`, genesis or enrolled later (cached: the devnet signs with it every block)."""
    return KeyPair.from_seed(seed + f":validator:{index}".encode())


def relayer_key(seed: bytes, index: int) -> KeyPair:
    """The key of `devnet-relayer-{index}`, a genesis relayer (DOMAIN.md: the only keys that sign bridge txs)."""
    return KeyPair.from_seed(seed + f":relayer:{index}".encode())


def trading_accounts(keys: DevnetKeys) -> tuple[KeyPair, ...]:
    """The accounts the devnet signs for: all but the last RESERVED_ACCOUNTS."""
    return keys.accounts[: max(2, len(keys.accounts) - RESERVED_ACCOUNTS)]


def reserved_accounts(keys: DevnetKeys) -> tuple[KeyPair, ...]:
    """Funded accounts the devnet never signs for: `tally devnet-key --index N` exports number N of them."""
    return keys.accounts[len(trading_accounts(keys)) :]


def reserved_account_seed(seed: bytes, number: int) -> bytes:
    """The key seed of reserved account `number` of the devnet made from `seed` (`tally devnet-key`)."""
    if not 0 <= number < RESERVED_ACCOUNTS:
        raise ValueError(f"the devnet reserves accounts 0 .. {RESERVED_ACCOUNTS - 1}")
    return account_seed(seed, ACCOUNTS - RESERVED_ACCOUNTS + number)


def devnet_genesis(
    seed: bytes,
    chain_id: str = CHAIN_ID,
    validators: int = GENESIS_VALIDATORS,
    accounts: int = ACCOUNTS,
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
        "relayers": [{"relayer_id": f"devnet-relayer-{i}", "key": relayer_key(seed, i).key} for i in range(RELAYERS)],
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
    senders: Sequence[int] | None = None,
) -> list[PlannedTransfer]:
    """Random CELL transfers between accounts, nonces and funds tracked through the block.

    `nonces` and `balances` are the ledger's figures before the block, per account index. A transfer built
    to be rejected does not advance the local nonce or move funds, exactly as the ledger treats it. `senders`
    (default: every account) are the indexes that may send: the others' figures may change by txs the devnet
    does not plan (the tx pool's) before these transfers.
    """
    nonce, balance = list(nonces), list(balances)
    plans: list[PlannedTransfer] = []
    if senders is not None and not senders:
        return plans
    for _ in range(count):
        sender = rng.randrange(len(accounts)) if senders is None else rng.choice(senders)
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


def build_all_votes(keys: DevnetKeys, *, chain_id: str, height: int, block_hash: str) -> list[dict[str, Any]]:
    """Votes for one block from every validator in `keys`."""
    return [build.vote(chain_id, v.node_id, v.key, height, block_hash) for v in keys.validators]


def ledger_figures(view: LedgerView, chain_id: str, keys: DevnetKeys) -> tuple[list[int], list[int]]:
    """The next nonce and the CELL balance of every devnet account, in the ledger's canonical state."""
    addresses = [k.address for k in keys.accounts]
    return [view.next_nonce(chain_id, a) for a in addresses], [view.balance(chain_id, a, ASSET) for a in addresses]


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
    nonces, balances = ledger_figures(view, chain_id, keys)
    return block_on(keys, rng, head, nonces, balances, chain_id=chain_id, now_ms=now_ms, txs_per_block=txs_per_block)


def block_on(
    keys: DevnetKeys,
    rng: random.Random,
    parent: tuple[int, str, int],
    nonces: Sequence[int],
    balances: Sequence[int],
    *,
    chain_id: str,
    now_ms: int,
    txs_per_block: int,
    leading: Sequence[dict[str, Any]] = (),
    senders: Sequence[int] | None = None,
) -> tuple[dict[str, Any], list[PlannedTransfer]]:
    """The round-robin proposer's block on `parent` (height, hash, timestamp_ms): the `leading` txs, then
    transfers planned from the figures after them (`senders`: see plan_transfers)."""
    height, parent_hash, parent_ts = parent
    plans = plan_transfers(
        rng, [k.address for k in keys.accounts], nonces, balances, txs_per_block, senders=senders
    )
    block = build_block(
        keys.proposer(height + 1),
        chain_id=chain_id,
        height=height + 1,
        parent=parent_hash,
        timestamp_ms=max(now_ms, parent_ts),  # a clock that stepped back must not make the block invalid
        txs=[*leading, *sign_planned(keys, chain_id, plans)],
    )
    return block, plans


def settle(
    addresses: Sequence[str],
    nonces: Sequence[int],
    balances: Sequence[int],
    plans: Sequence[PlannedTransfer],
    *,
    operator: str | None = None,
    reward: int = 0,
) -> tuple[list[int], list[int]]:
    """Nonces and CELL balances after the planned transfers, as the ledger applies them: only the ones built
    to be applied move anything; then the reward and their fees go to the proposer's `operator`, if given."""
    index = {a: i for i, a in enumerate(addresses)}
    nonce, balance = list(nonces), list(balances)
    fees = 0
    for p in plans:
        if p.intent == "applied":
            nonce[p.sender] += 1
            balance[p.sender] -= p.amount + p.fee
            balance[index[p.to]] += p.amount
            fees += p.fee
    if operator is not None:
        balance[index[operator]] += reward + fees
    return nonce, balance


def fork_due(seed: bytes, height: int, period_blocks: int) -> bool:
    """Whether a competing branch should win at `height`: once in every window of `period_blocks` heights
    (1 .. period, period + 1 .. 2 * period, ...), at a place in the window drawn from the seed, so the same seed
    forks at the same heights (a restarted devnet forks where it would have) and reorgs come regularly but not
    on a beat. Never with a period of 0."""
    return due(seed, "fork", height, period_blocks)


def due(seed: bytes, what: str, height: int, period_blocks: int) -> bool:
    """Once in every window of `period_blocks` heights, at a place drawn from the seed for `what` (see fork_due)."""
    if period_blocks <= 0:
        return False
    window, place = divmod(height - 1, period_blocks)
    return draw(seed, f"{what}:{window}") % period_blocks == place


def draw(seed: bytes, what: str) -> int:
    """A 64-bit number drawn from the seed for `what`: the same seed always draws the same."""
    return int.from_bytes(hashlib.blake2b(seed + f":{what}".encode(), digest_size=8).digest(), "big")


def competitor_of(keys: DevnetKeys, height: int) -> DevnetValidator | None:
    """The validator that competes with the round-robin proposer at `height` (the next one in the round);
    None when there is only one validator."""
    if len(keys.validators) < 2:
        return None
    return keys.proposer(height + 1)


def build_fork(
    keys: DevnetKeys,
    rng: random.Random,
    *,
    chain_id: str,
    parent: tuple[int, str, int],
    nonces: Sequence[int],
    balances: Sequence[int],
    replaced: dict[str, Any],
    replaced_plans: Sequence[PlannedTransfer],
    now_ms: int,
    txs_per_block: int,
    block_reward: int,
) -> list[tuple[dict[str, Any], list[PlannedTransfer]]]:
    """The branch that replaces `replaced` (the block on `parent`): two blocks on `parent` by a competing
    validator, the second one making the branch longer than the one `replaced` ends.

    `nonces` and `balances` are the figures after `parent`. The first block keeps the first half of the replaced
    block's txs (same parent state, so they get the receipts they were planned for), then fresh transfers; the
    rest of the replaced block's txs will be reverted. The second block is planned from the state after the first
    (its transfers, fees and the competitor's reward).
    """
    height, parent_hash, parent_ts = parent
    competitor = competitor_of(keys, height + 1)
    if competitor is None:
        raise ValueError("a fork needs a second validator")
    assert replaced["height"] == height + 1 and replaced["parent"] == parent_hash
    assert len(replaced["txs"]) == len(replaced_plans)
    addresses = [k.address for k in keys.accounts]
    kept = len(replaced_plans) // 2
    mid_nonces, mid_balances = settle(addresses, nonces, balances, replaced_plans[:kept])
    fresh = plan_transfers(rng, addresses, mid_nonces, mid_balances, max(0, txs_per_block - kept))
    first_plans = [*replaced_plans[:kept], *fresh]
    timestamp_ms = max(now_ms, parent_ts)
    first = build_block(
        competitor,
        chain_id=chain_id,
        height=height + 1,
        parent=parent_hash,
        timestamp_ms=timestamp_ms,
        txs=[*replaced["txs"][:kept], *sign_planned(keys, chain_id, fresh)],
    )
    after_nonces, after_balances = settle(
        addresses, nonces, balances, first_plans, operator=competitor.operator, reward=block_reward
    )
    second_plans = plan_transfers(rng, addresses, after_nonces, after_balances, txs_per_block)
    second = build_block(
        competitor,
        chain_id=chain_id,
        height=height + 2,
        parent=block_hash(first),
        timestamp_ms=timestamp_ms,
        txs=sign_planned(keys, chain_id, second_plans),
    )
    return [(first, first_plans), (second, second_plans)]


# ---------------------------------------------------------------- validators: roster, enroll, unenroll, slash


@dataclass(frozen=True)
class Roster:
    """The validators after the ledger's head, as the devnet sees them."""

    own: tuple[DevnetValidator, ...]  # active, with keys derived from the seed, by index
    index_of: dict[str, int]  # node_id -> K of the devnet's own validators (any phase)
    stakes: dict[str, int]  # node_id -> stake, every validator (any phase)
    active_stake: int  # of every active validator, the devnet's and others'
    next_index: int  # the K of the devnet's next validator: after its newest, a node_id nobody enrolled

    @property
    def own_stake(self) -> int:
        return sum(v.stake for v in self.own)

    def finalizes_without(self, stake: int = 0) -> bool:
        """Whether the devnet's votes would still be more than 2/3 of the active stake if `stake` of its own
        left the active set."""
        return 3 * (self.own_stake - stake) > 2 * (self.active_stake - stake)

    def keys(self, accounts: Sequence[KeyPair]) -> DevnetKeys:
        """The devnet's keys for the next block: its active validators (round robin) and `accounts`."""
        return DevnetKeys(validators=self.own, accounts=tuple(accounts))


def roster_of(seed: bytes, validators: Iterable[Any]) -> Roster:
    """The devnet's view of a ledger's validators (writes.state.Validator): its own are `devnet-node-K` whose
    key is the one derived from the seed for K (a node_id is anyone's to take)."""
    own, index_of, stakes = [], {}, {}
    active_stake = 0
    for v in validators:
        stakes[v.node_id] = v.stake
        active = v.phase == ACTIVE
        active_stake += v.stake if active else 0
        match = _NODE_ID.fullmatch(v.node_id)
        if match is None:
            continue
        index = int(match.group(1))
        key = validator_key(seed, index)
        if (v.alg, v.pk) != (key.alg, key.pk):
            continue
        index_of[v.node_id] = index
        if active:
            own.append((index, DevnetValidator(v.node_id, key, v.operator, v.gpu_uuid, v.stake)))
    own.sort(key=lambda pair: pair[0])
    # After the devnet's own newest, the first node_id nobody took (someone else may have enrolled any name).
    next_index = max(index_of.values(), default=-1) + 1
    while f"devnet-node-{next_index}" in stakes:
        next_index += 1
    return Roster(tuple(v for _, v in own), index_of, stakes, active_stake, next_index)


@dataclass(frozen=True)
class PlannedOp:
    """A validator tx the devnet signs, the receipt it is built to get, and its effect on the signer's CELL."""

    kind: Literal["enroll", "unenroll", "slash", "bridge_deposit", "withdraw_request", "withdraw_confirm",
                  "withdraw_reject"]
    sender: int  # index into the accounts the devnet signs for; -1 for a relayer tx (no nonce, no CELL)
    tx: dict[str, Any]
    intent: str  # "applied" or the rejection reason
    cell_delta: int = 0  # the signer's CELL change when applied (- stake bonded, + reporter's share)


@dataclass(frozen=True)
class Report:
    """Evidence of an equivocation waiting for a block: the two votes, and whether to report it twice."""

    node_id: str
    evidence: tuple[dict[str, Any], dict[str, Any]]
    twice: bool


def apply_ops(nonces: Sequence[int], balances: Sequence[int], ops: Sequence[PlannedOp]) -> tuple[list[int], list[int]]:
    """The figures after the ops, as the ledger applies them (a rejected op changes nothing)."""
    nonce, balance = list(nonces), list(balances)
    for op in ops:
        if op.intent == "applied" and op.sender >= 0:
            nonce[op.sender] += 1
            balance[op.sender] += op.cell_delta
    return nonce, balance


def plan_enrollment(
    seed: bytes,
    roster: Roster,
    accounts: Sequence[KeyPair],
    nonces: Sequence[int],
    balances: Sequence[int],
    *,
    chain_id: str,
    scheduled: bool,
    min_stake: int,
) -> PlannedOp | None:
    """`devnet-node-K` (K: the roster's next index) enrolled by account K, when `scheduled` and the devnet has
    fewer than VALIDATORS_ACTIVE_MAX validators, or at once when it has fewer than VALIDATORS_ACTIVE_MIN or no
    longer holds more than 2/3 of the active stake: then with enough stake to hold it again, as far as the
    operator's funds go."""
    heal = len(roster.own) < VALIDATORS_ACTIVE_MIN or not roster.finalizes_without(0)
    if not heal and not (scheduled and len(roster.own) < VALIDATORS_ACTIVE_MAX):
        return None
    index = roster.next_index
    sender = index % len(accounts)
    stake = ENROLL_STAKE_MIN + draw(seed, f"stake:{index}") % ENROLL_STAKE_SPREAD
    if heal:  # 3 * (own + stake) > 2 * (active + stake), with a tenth of the active stake to spare
        stake = max(stake, 2 * roster.active_stake - 3 * roster.own_stake + 1 + roster.active_stake // 10)
    stake = min(stake, balances[sender] - OPERATOR_RESERVE)
    if stake < min_stake:
        return None
    node_id = f"devnet-node-{index}"
    gpu_uuid = f"GPU-devnet-{index}-{draw(seed, f'gpu:{index}'):016x}"
    tx = build.enroll(
        chain_id, accounts[sender], node_id, gpu_uuid, stake, validator_key(seed, index), nonce=nonces[sender]
    )
    return PlannedOp("enroll", sender, tx, "applied", -stake)


def plan_unenrollment(
    roster: Roster, accounts: Sequence[KeyPair], nonces: Sequence[int], *, chain_id: str
) -> PlannedOp | None:
    """The oldest validator the devnet enrolled (never a genesis one) unenrolls, if that leaves the devnet more
    than 2/3 of the active stake and at least VALIDATORS_ACTIVE_MIN validators."""
    if len(roster.own) <= VALIDATORS_ACTIVE_MIN:
        return None
    senders = {k.address: i for i, k in enumerate(accounts)}
    for v in roster.own:
        if roster.index_of[v.node_id] < GENESIS_VALIDATORS or v.operator not in senders:
            continue
        if not roster.finalizes_without(v.stake):
            return None
        sender = senders[v.operator]
        tx = build.unenroll(chain_id, accounts[sender], v.node_id, nonce=nonces[sender])
        return PlannedOp("unenroll", sender, tx, "applied")
    return None


def choose_equivocator(seed: bytes, roster: Roster, height: int) -> DevnetValidator | None:
    """The devnet validator that double-votes at `height` (drawn from the seed; an enrolled one rather than a
    genesis one), if the devnet keeps more than 2/3 of the active stake and VALIDATORS_ACTIVE_MIN validators
    even when the slash revokes it."""
    if len(roster.own) <= VALIDATORS_ACTIVE_MIN:
        return None
    enrolled = [v for v in roster.own if roster.index_of[v.node_id] >= GENESIS_VALIDATORS]
    candidates = enrolled or list(roster.own)
    chosen = candidates[draw(seed, f"equivocator:{height}") % len(candidates)]
    return chosen if roster.finalizes_without(chosen.stake) else None


def equivocate(
    seed: bytes, validator: DevnetValidator, *, chain_id: str, height: int, block_hash: str
) -> Report:
    """Two votes by `validator` at `height`: for the real block and for one that does not exist."""
    phantom = hash_hex(seed + f":phantom:{chain_id}:{height}".encode())
    votes = build.evidence(chain_id, validator.node_id, validator.key, height, (block_hash, phantom))
    return Report(validator.node_id, (votes[0], votes[1]), twice=draw(seed, f"twice:{height}") % 2 == 0)


def plan_reports(
    seed: bytes,
    report: Report,
    roster: Roster,
    accounts: Sequence[KeyPair],
    nonces: Sequence[int],
    balances: Sequence[int],
    *,
    chain_id: str,
    params: dict[str, int],
) -> list[PlannedOp]:
    """A slash with the report's evidence (applied), and, if the report says so, the same offence reported by
    the next account with the votes swapped (rejected: duplicate_offence; the offence is the unordered pair)."""
    height = report.evidence[0]["height"]
    reporter = draw(seed, f"reporter:{report.node_id}:{height}") % len(accounts)
    stake = roster.stakes.get(report.node_id, 0)
    _, to_reporter = slash_amounts(stake, params)
    first = build.slash(chain_id, accounts[reporter], report.node_id, report.evidence, nonce=nonces[reporter])
    ops = [PlannedOp("slash", reporter, first, "applied" if stake > 0 else "not_slashable", to_reporter)]
    if report.twice:
        again = (reporter + 1) % len(accounts)
        swapped = [report.evidence[1], report.evidence[0]]
        tx = build.slash(chain_id, accounts[again], report.node_id, swapped, nonce=nonces[again])
        ops.append(PlannedOp("slash", again, tx, "duplicate_offence" if stake > 0 else "not_slashable"))
    return ops


# ---------------------------------------------------------------- the bridge: deposits, withdrawals, a relayer


def bridge_state(view: Any, chain_id: str) -> tuple[frozenset[str], list[dict[str, Any]]]:
    """(addresses of the chain's relayers, its pending withdrawal records) in the canonical state, read from the
    ledger's fold (LedgerService.ledger); nothing when the view has none."""
    ledger = getattr(view, "ledger", None)
    chain = None if ledger is None else ledger.chains.get(chain_id)
    if chain is None:
        return frozenset(), []
    # list() copies in one step under the GIL: the writer thread may fold a block meanwhile.
    records = list(chain.reserves.values())
    return frozenset(list(chain.relayer_addresses)), [dict(r) for r in records if r["status"] == "pending"]


def plan_settlements(
    seed: bytes, relayers: Sequence[KeyPair], pending: Sequence[dict[str, Any]], *, chain_id: str, height: int
) -> list[PlannedOp]:
    """A relayer confirms (paid out: an external tx drawn from the seed) or rejects (about one in REJECT_ONE_IN:
    the owner is refunded) every withdrawal that waited SETTLE_AFTER_BLOCKS in the queue, oldest first, at most
    SETTLEMENTS_PER_BLOCK_MAX per block."""
    due_now = sorted((r for r in pending if r["height"] + SETTLE_AFTER_BLOCKS <= height),
                     key=lambda r: (r["height"], r["reserve_id"]))
    ops = []
    for record in due_now[:SETTLEMENTS_PER_BLOCK_MAX]:
        rid = record["reserve_id"]
        relayer = relayers[draw(seed, f"relayer:{rid}") % len(relayers)]
        if draw(seed, f"reject:{rid}") % REJECT_ONE_IN == 0:
            tx = build.withdraw_reject(chain_id, relayer, rid, "devnet relayer: refused (a drawn one in five)")
            ops.append(PlannedOp("withdraw_reject", -1, tx, "applied"))
        else:
            payout = "0x" + hash_hex(seed + f":payout:{chain_id}:{rid}".encode())
            ops.append(PlannedOp("withdraw_confirm", -1, build.withdraw_confirm(chain_id, relayer, rid, payout),
                                 "applied"))
    return ops


def plan_deposit(
    seed: bytes, relayers: Sequence[KeyPair], receivers: Sequence[str], *, chain_id: str, height: int
) -> PlannedOp:
    """A relayer credits one of `receivers` with 1 .. DEPOSIT_UNITS_MAX units of a bridged asset (all drawn from
    the seed for the height), as if locked on Ethereum."""
    asset = BRIDGED_ASSETS[draw(seed, f"deposit-asset:{height}") % len(BRIDGED_ASSETS)]
    to = receivers[draw(seed, f"deposit-to:{height}") % len(receivers)]
    amount = (1 + draw(seed, f"deposit-amount:{height}") % DEPOSIT_UNITS_MAX) * MICRO
    relayer = relayers[draw(seed, f"deposit-relayer:{height}") % len(relayers)]
    rid = f"devnet:deposit:{chain_id}:{height}:{draw(seed, f'deposit-id:{height}'):016x}"
    external = "0x" + hash_hex(seed + f":lock:{rid}".encode())
    return PlannedOp("bridge_deposit", -1, build.bridge_deposit(chain_id, relayer, rid, asset, to, amount,
                                                               external_tx=external), "applied")


def plan_withdrawal(
    seed: bytes, accounts: Sequence[KeyPair], nonces: Sequence[int], held: dict[tuple[int, str], int], *,
    chain_id: str, height: int,
) -> PlannedOp | None:
    """One of `accounts` holding a bridged asset (`held`: (account index, asset) -> balance before the block)
    asks to withdraw up to half of it to an Ethereum address; None when nobody holds any."""
    holders = sorted(key for key, amount in held.items() if amount > 0)
    if not holders:
        return None
    sender, asset = holders[draw(seed, f"withdraw-who:{height}") % len(holders)]
    amount = 1 + draw(seed, f"withdraw-amount:{height}") % max(1, held[(sender, asset)] // 2)
    rid = f"devnet:withdrawal:{chain_id}:{height}:{draw(seed, f'withdraw-id:{height}'):016x}"
    destination = "0x" + hash_hex(seed + f":destination:{sender}".encode())[:40]
    tx = build.withdraw_request(chain_id, accounts[sender], rid, asset, amount, nonce=nonces[sender],
                                external_address=destination)
    return PlannedOp("withdraw_request", sender, tx, "applied")


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
        nonces, balances = settle(
            addresses, nonces, balances, plans, operator=proposer.operator, reward=genesis["params"]["block_reward"]
        )
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
    """Submits the genesis once, then one block per interval on the current head, then its votes; now and then
    a competing branch that wins, an enrollment, an unenrollment, an equivocation and its reports (see the module
    docstring); pooled txs go into the next block.

    Counters: `blocks_accepted` and `blocks_rejected` (every block it submitted, competing ones included),
    `errors` (steps that raised), `forks` (competing branches started) and `reorgs` (the ones that won),
    `enrollments`, `unenrollments` (applied), `equivocations`, `slashes_applied`, `slashes_rejected`,
    `pooled_txs` (pool txs put in accepted blocks), `deposits`, `withdrawal_requests`, `withdrawals_confirmed`,
    `withdrawals_rejected` (applied), `unexpected_receipts` (devnet txs whose receipt was not the one planned) and
    `unfinalized` (blocks its votes did not finalize).

    Deposits and withdrawal requests are off unless their periods are given (`tally up` gives DEPOSIT_PERIOD_BLOCKS
    and WITHDRAW_PERIOD_BLOCKS); the relayer settles whatever withdrawals wait, whoever requested them."""

    def __init__(
        self,
        service: Submitter,
        data_dir: Path,
        *,
        block_interval_ms: int = 1000,
        txs_per_block: int = 20,
        chain_id: str = CHAIN_ID,
        fork_period_blocks: int = FORK_PERIOD_BLOCKS,
        enroll_period_blocks: int = ENROLL_PERIOD_BLOCKS,
        unenroll_period_blocks: int = UNENROLL_PERIOD_BLOCKS,
        equivocation_period_blocks: int = EQUIVOCATION_PERIOD_BLOCKS,
        deposit_period_blocks: int = 0,
        withdraw_period_blocks: int = 0,
        pool: TxPool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.data_dir = Path(data_dir)
        self.block_interval_ms = block_interval_ms
        self.txs_per_block = txs_per_block
        self.chain_id = chain_id
        self.fork_period_blocks = fork_period_blocks
        self.enroll_period_blocks = enroll_period_blocks
        self.unenroll_period_blocks = unenroll_period_blocks
        self.equivocation_period_blocks = equivocation_period_blocks
        self.deposit_period_blocks = deposit_period_blocks
        self.withdraw_period_blocks = withdraw_period_blocks
        self.pool = pool
        self.blocks_accepted = 0
        self.blocks_rejected = 0
        self.errors = 0
        self.forks = 0
        self.reorgs = 0
        self.enrollments = 0
        self.unenrollments = 0
        self.equivocations = 0
        self.slashes_applied = 0
        self.slashes_rejected = 0
        self.pooled_txs = 0
        self.unexpected_receipts = 0
        self.unfinalized = 0
        self.deposits = 0
        self.withdrawal_requests = 0
        self.withdrawals_confirmed = 0
        self.withdrawals_rejected = 0
        self._bridge_off_told = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._keys: DevnetKeys | None = None
        self._seed = b""
        self._rng = rng if rng is not None else random.Random()
        self._reports: deque[Report] = deque(maxlen=16)  # equivocations waiting for a block to report them

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
        self._seed = seed
        genesis, keys = devnet_genesis(seed, self.chain_id, timestamp_ms=_now_ms())
        if self.service.head(self.chain_id) is None:
            result = self.service.submit(genesis)
            if result.get("status") != "accepted" and result.get("reason") != "genesis_exists":
                raise RuntimeError(f"devnet genesis refused: {result}")
            log.info("devnet genesis %s", result.get("hash"))
        else:
            # A crash may have come between a block and its votes, or in the middle of a fork: the head
            # finalizes, and a competing block left on the side stays there.
            self._vote_for_head()
        return keys

    def roster(self) -> Roster:
        return roster_of(self._seed, self.service.validators(self.chain_id))

    def step(self) -> dict[str, Any]:
        """Build, submit and vote for one block; returns the block's result. When a fork is due at the new
        height and wins, the result is that of the competing block that reorganized the ledger."""
        if self._keys is None:
            self._keys = self.ensure_genesis()
        head = self.service.head(self.chain_id)
        if head is None:
            raise LookupError(f"chain {self.chain_id!r} has no genesis yet")
        roster = self.roster()
        if not roster.own:
            raise RuntimeError(
                f"no active validator of chain {self.chain_id!r} has a key derived from {self.data_dir / SEED_FILE}:"
                " is it the seed this chain's genesis was made from?"
            )
        keys = roster.keys(trading_accounts(self._keys))
        nonces, balances = ledger_figures(self.service, self.chain_id, keys)  # a fork plans from them too
        height = head[0] + 1
        fork = len(keys.validators) > 1 and fork_due(self._seed, height, self.fork_period_blocks)
        # A block that a fork will replace carries only transfers: validator txs and pooled txs wait for the next.
        ops, pooled = ([], []) if fork else self._next_txs(roster, keys, height, nonces, balances)
        figures = apply_ops(nonces, balances, ops)
        block, plans = block_on(
            keys,
            self._rng,
            head,
            *figures,
            chain_id=self.chain_id,
            now_ms=_now_ms(),
            txs_per_block=self.txs_per_block,
            leading=[*(op.tx for op in ops), *pooled],
            senders=_untouched(keys, pooled) if pooled else None,
        )
        result = self.service.submit(block)
        if result.get("status") != "accepted":
            self.blocks_rejected += 1
            hint = ""
            if result.get("reason") in ("bad_signature", "proposer_not_active"):
                hint = f" (is {self.data_dir / SEED_FILE} the seed this chain's genesis was made from?)"
            log.warning(
                "devnet block %s refused: %s: %s%s (%d pooled txs dropped)",
                block["height"], result.get("reason"), result.get("message"), hint, len(pooled),
            )  # fmt: skip
            return result
        self.blocks_accepted += 1
        self.pooled_txs += len(pooled)
        self._count_ops(ops, result["receipts"])
        if fork:
            # The block's votes are withheld: a final block could never be reverted.
            won = self._fork(keys, head, nonces, balances, block, plans)
            if won is not None:
                return won
        self._vote(block["height"], result["hash"])
        if not fork and due(self._seed, "equivocation", block["height"], self.equivocation_period_blocks):
            self._equivocate(block["height"], result["hash"])
        return result

    def _next_txs(
        self, roster: Roster, keys: DevnetKeys, height: int, nonces: list[int], balances: list[int]
    ) -> tuple[list[PlannedOp], list[dict[str, Any]]]:
        """The devnet's validator txs for the block at `height` (enroll, unenroll, then reports), in the order the
        block carries them, each planned from the figures after the ones before; and the pooled txs."""
        accounts, params = keys.accounts, PARAM_DEFAULTS  # the devnet genesis takes the defaults
        ops: list[PlannedOp] = []
        enroll = plan_enrollment(
            self._seed, roster, accounts, nonces, balances, chain_id=self.chain_id, min_stake=params["min_stake"],
            scheduled=due(self._seed, "enroll", height, self.enroll_period_blocks),
        )  # fmt: skip
        ops += [enroll] if enroll is not None else []
        if due(self._seed, "unenroll", height, self.unenroll_period_blocks):
            unenroll = plan_unenrollment(roster, accounts, apply_ops(nonces, balances, ops)[0], chain_id=self.chain_id)
            ops += [unenroll] if unenroll is not None else []
        if self._reports:
            report = self._reports.popleft()
            ops += plan_reports(
                self._seed, report, roster, accounts, *apply_ops(nonces, balances, ops), chain_id=self.chain_id,
                params=params,
            )  # fmt: skip
        ops += self._bridge_ops(keys, height, apply_ops(nonces, balances, ops)[0])
        room = max(0, params["max_block_txs"] - len(ops) - self.txs_per_block)
        pooled = self.pool.take(min(room, TXPOOL_BLOCK_TXS_MAX)) if self.pool is not None else []
        return ops, pooled

    def _bridge_ops(self, keys: DevnetKeys, height: int, nonces: Sequence[int]) -> list[PlannedOp]:
        """The relayer's settlements of the withdrawals waiting, a deposit and a withdrawal request when due (in
        that order). None when the chain's genesis has none of the devnet's relayers (a devnet made before them)."""
        relayer_addresses, pending = bridge_state(self.service, self.chain_id)
        relayers = [k for k in (relayer_key(self._seed, i) for i in range(RELAYERS)) if k.address in relayer_addresses]
        if not relayers:
            if not self._bridge_off_told:
                self._bridge_off_told = True
                log.warning("devnet: the genesis of %r has none of the devnet's relayers (made by an older version?):"
                            " no bridge activity; `make clean` starts a devnet with them", self.chain_id)
            return []
        ops = plan_settlements(self._seed, relayers, pending, chain_id=self.chain_id, height=height)
        if due(self._seed, "deposit", height, self.deposit_period_blocks):
            # Deposits go to the CLI's reserved accounts too: `tally liability-proof` then has a balance to prove.
            assert self._keys is not None
            receivers = [k.address for k in self._keys.accounts]
            ops.append(plan_deposit(self._seed, relayers, receivers, chain_id=self.chain_id, height=height))
        if due(self._seed, "withdraw", height, self.withdraw_period_blocks):
            held = {
                (i, asset): self.service.balance(self.chain_id, k.address, asset)
                for i, k in enumerate(keys.accounts) for asset in BRIDGED_ASSETS
            }
            request = plan_withdrawal(self._seed, keys.accounts, nonces, held, chain_id=self.chain_id, height=height)
            ops += [request] if request is not None else []
        return ops

    _APPLIED_COUNTERS = {
        "enroll": "enrollments", "unenroll": "unenrollments", "bridge_deposit": "deposits",
        "withdraw_request": "withdrawal_requests", "withdraw_confirm": "withdrawals_confirmed",
        "withdraw_reject": "withdrawals_rejected",
    }

    def _count_ops(self, ops: Sequence[PlannedOp], receipts: Sequence[dict[str, Any]]) -> None:
        for op, receipt in zip(ops, receipts, strict=False):  # the ops lead the block
            outcome = receipt["reason"] or receipt["status"]
            if op.kind == "slash":
                if receipt["status"] == "applied":
                    self.slashes_applied += 1
                else:
                    self.slashes_rejected += 1
            elif receipt["status"] == "applied":
                counter = self._APPLIED_COUNTERS[op.kind]
                setattr(self, counter, getattr(self, counter) + 1)
            what = op.tx.get("node_id") or op.tx.get("reserve_id")
            if outcome != op.intent:
                self.unexpected_receipts += 1
                log.warning("devnet %s %s at height %d: %s, planned %s", op.kind, what, receipt["height"], outcome,
                            op.intent)
            else:
                log.info("devnet %s %s at height %d: %s", op.kind, what, receipt["height"], outcome)

    def _equivocate(self, height: int, hash_: str) -> None:
        """A devnet validator also votes for a block that does not exist at `height`; the next block reports it."""
        validator = choose_equivocator(self._seed, self.roster(), height)
        if validator is None:
            return
        report = equivocate(self._seed, validator, chain_id=self.chain_id, height=height, block_hash=hash_)
        result = self.service.submit(report.evidence[1])  # its vote for the real block is in already
        if result.get("status") != "accepted":
            log.warning("devnet equivocation vote refused: %s", result)
            return
        self.equivocations += 1
        self._reports.append(report)
        log.info("devnet equivocation: %s voted twice at height %d", validator.node_id, height)

    def _fork(
        self,
        keys: DevnetKeys,
        parent: tuple[int, str, int],
        nonces: list[int],
        balances: list[int],
        replaced: dict[str, Any],
        replaced_plans: list[PlannedTransfer],
    ) -> dict[str, Any] | None:
        """A competing branch of two blocks beside `replaced`; if it wins, votes finalize it and the result of
        its reorganizing block is returned. None if it did not win (the caller then votes for `replaced`)."""
        self.forks += 1
        branch = build_fork(
            keys,
            self._rng,
            chain_id=self.chain_id,
            parent=parent,
            nonces=nonces,
            balances=balances,
            replaced=replaced,
            replaced_plans=replaced_plans,
            now_ms=_now_ms(),
            txs_per_block=self.txs_per_block,
            block_reward=PARAM_DEFAULTS["block_reward"],  # the devnet genesis takes the defaults
        )
        results = self.service.submit_many([b for b, _ in branch])
        accepted = [r for r in results if r.get("status") == "accepted"]
        self.blocks_accepted += len(accepted)
        self.blocks_rejected += len(results) - len(accepted)
        reorg = results[-1].get("reorg")
        if len(accepted) < len(results) or not results[-1].get("canonical") or reorg is None:
            refused = [r for r in results if r.get("status") != "accepted"]
            log.warning(
                "devnet fork at height %d did not win: %s",
                replaced["height"],
                refused[0] if refused else results[-1].get("reorg"),
            )
            return None
        self.reorgs += 1
        log.info(
            "devnet reorg (%s) at height %d: depth %d, tip %d:%s -> %d:%s, proposed by %s",
            reorg["cause"],
            reorg["ancestor_height"] + 1,
            reorg["depth"],
            reorg["old_tip"][0],
            reorg["old_tip"][1][:16],
            reorg["new_tip"][0],
            reorg["new_tip"][1][:16],
            branch[-1][0]["proposer"],
        )
        for (block, _), result in zip(branch, results, strict=True):
            self._vote(block["height"], result["hash"])
        return results[-1]

    def _vote(self, height: int, hash_: str) -> None:
        """Votes from every active validator the devnet has keys for, in the state after the block."""
        keys = self.roster().keys(())
        votes = build_all_votes(keys, chain_id=self.chain_id, height=height, block_hash=hash_)
        results = self.service.submit_many(votes)
        finalized = max((r.get("finalized_height") or 0 for r in results), default=0)
        if finalized < height:
            self.unfinalized += 1
            log.warning("devnet votes did not finalize height %d (finalized: %d)", height, finalized)

    def _vote_for_head(self) -> None:
        head = self.service.head(self.chain_id)
        if head is not None and head[0] > 0:
            height, hash_, _ = head
            self._vote(height, hash_)

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


def _untouched(keys: DevnetKeys, pooled: Sequence[dict[str, Any]]) -> list[int]:
    """The accounts no pooled tx signs for or pays: their figures are the ledger's when the transfers come."""
    touched = {tx.get("signer") for tx in pooled} | {tx.get("to") for tx in pooled}
    return [i for i, k in enumerate(keys.accounts) if k.address not in touched]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
