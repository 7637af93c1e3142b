"""Point in time (issue 7, item 4): every GraphQL root field that takes `atHeight` answers, at a height h, what a
replay of the log truncated at h (`projections.replay.replay(..., to_height=h)` into a fresh store) answers at its
head.

The fields are found by introspecting the schema (today `account`; the validator and reserve families add theirs),
and the selection of each is every field of its type that needs no argument, nested, so a new view is covered the
day it is merged. A new required argument needs values in `ARGUMENT_VALUES`; the test says so.

Which heights. A truncated replay stops before the first event that puts a block above h on the canonical chain,
so it holds the views as they were when the chain first stood above h. A reorganization after that moment with its
common ancestor below h replaces the block at h: the live views then answer with the new block, the truncated
replay with the old one. The property is exact for every other height, and the log is built so that both kinds
exist: a reorg of depth 1 at height 3 (its replaced block was the tip: the chain had never stood above 3, so 3
stays exact) and a reorg of depth 2 at heights 10 and 11 (the chain stood at 11, above 10, before 10 was replaced:
10 is rewritten; 11 stays exact). The log's last votes finalize height 12, so 10 is final: being at or below the
finalized height is not what makes a height exact. A block already final when the chain first stood above it can
never be replaced, so such heights are always exact.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from graphql import GraphQLObjectType, GraphQLOutputType, build_client_schema, get_named_type, is_leaf_type
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.graphql import Context, build_schema
from api.reads import Reads
from projections.queries import ReadModel
from projections.replay import above_height, replay
from projections.store import ProjectionStore
from schemas import build
from schemas.events import ChainReorganized, LedgerEvent
from schemas.settings import Settings
from streams.follower import Follower
from tests.chain import ALICE, BOB, CAROL, CELL, STAKE, Chain, genesis_command, keypair, validators
from writes.service import LedgerApplication, LedgerService

RELAYER = keypair("relayer-a")
EVERY = 2  # reserves attested each time finality passes a multiple of 2
UNBOND_MS = 2_000  # two blocks: an unenrolled validator is released within the log
TOP = 12  # the log's head height
REWRITTEN = frozenset({10})  # replaced by a reorganization after the chain first stood above it
EXACT_HEIGHTS = [h for h in range(TOP + 1) if h not in REWRITTEN]
NOBODY = "0x" + "ee" * 20

# Values for the required arguments of the fields that take `atHeight` (known and unknown ones).
ARGUMENT_VALUES: dict[str, list[str]] = {
    "address": [ALICE.address, BOB.address, CAROL.address, keypair("operator-1").address, NOBODY],
    "nodeId": ["node-0", "node-1", "node-3", "node-new", "node-none"],
    "asset": ["USDC", "EURC", "CELL"],
    "reserveId": ["dep-1", "wd-1", "dep-2", "wd-2", "none"],
}
SELECTION_DEPTH_MAX = 3


# ------------------------------------------------------------------------------------------------ the log


def build_log(data_dir: Path) -> None:
    """Twelve heights of transfers, validator life (enroll, slash, unenroll, release) and bridge txs (deposits,
    withdrawals confirmed and rejected, attestations), finality lagging behind the tip, and two reorganizations:
    depth 1 at height 3 (the tip replaced) and depth 2 at heights 10-11 (height 10 replaced after the chain stood
    above it)."""
    service = LedgerService(Settings(data_dir=data_dir, verify_workers=1, reserves_every_blocks=EVERY))
    try:
        vals = validators((2 * STAKE,) * 4)
        genesis = genesis_command(vals=vals, relayers=[("relayer-a", RELAYER)], params={"unbond_ms": UNBOND_MS})
        chain = Chain(service, genesis, vals)
        cid = chain.chain_id

        def nonce(who: Any) -> int:
            return chain.nonce(who.address)

        chain.apply([  # 1
            chain.transfer(ALICE, BOB.address, 3 * CELL, fee=1),
            build.bridge_deposit(cid, RELAYER, "dep-1", "USDC", CAROL.address, 900),
            build.enroll(cid, BOB, "node-new", "GPU-NEW", STAKE, keypair("node-new"), nonce=nonce(BOB)),
        ])
        h2 = chain.apply([  # 2
            build.withdraw_request(cid, CAROL, "wd-1", "USDC", 100, nonce=nonce(CAROL)),
            chain.transfer(BOB, CAROL.address, 2 * CELL),
        ])["hash"]
        chain.finalize(h2, 2)  # final at once: its attestation comes before block 3
        chain.apply([chain.transfer(CAROL, ALICE.address, CELL)])  # 3, replaced while it is the tip:
        side3 = chain.submit(chain.block([chain.transfer(ALICE, CAROL.address, 2 * CELL)], parent=h2, proposer=1))
        assert side3["status"] == "accepted" and not side3["canonical"], side3
        reorg = chain.submit(chain.block([], parent=side3["hash"], proposer=1))  # 4: a reorg of depth 1
        assert reorg["reorg"]["depth"] == 1, reorg
        chain.apply([  # 5
            build.slash(cid, ALICE, "node-1", build.evidence(cid, "node-1", vals[1].key, 2, ("aa" * 32, "bb" * 32)),
                        nonce=nonce(ALICE)),
            build.bridge_deposit(cid, RELAYER, "dep-2", "EURC", BOB.address, 500),
        ])
        chain.apply([  # 6
            build.unenroll(cid, BOB, "node-new", nonce=nonce(BOB)),
            build.withdraw_confirm(cid, RELAYER, "wd-1"),
        ])
        h7 = chain.apply([build.withdraw_request(cid, BOB, "wd-2", "EURC", 50, nonce=nonce(BOB))])["hash"]  # 7
        chain.finalize(h7, 7)  # final at 7 after block 7: attestations at heights 4 and 6 come after their blocks
        assert chain.submit({"kind": "attest_reserves", "chain_id": cid, "asset": "USDC"})["status"] == "accepted"
        chain.apply([build.withdraw_reject(cid, RELAYER, "wd-2"), chain.transfer(CAROL, BOB.address, CELL)])  # 8
        h9 = chain.apply([chain.transfer(BOB, ALICE.address, 4 * CELL)])["hash"]  # 9
        chain.apply([chain.transfer(ALICE, BOB.address, 5 * CELL)])  # 10, replaced after block 11:
        chain.apply([chain.transfer(CAROL, BOB.address, CELL)])  # 11
        side10 = chain.submit(chain.block([chain.transfer(BOB, ALICE.address, 7 * CELL)], parent=h9, proposer=2))
        side11 = chain.submit(chain.block([], parent=side10["hash"], proposer=2))
        tip = chain.submit(chain.block([], parent=side11["hash"], proposer=2))  # 12: a reorg of depth 2
        assert tip["reorg"]["depth"] == 2 and tip["height"] == TOP, tip
        chain.finalize(tip["hash"], TOP)
    finally:
        service.close()


def events_of(app: LedgerApplication) -> Iterator[LedgerEvent]:
    for notification in app.recorder.select_notifications(1, 10_000):
        yield app.mapper.to_domain_event(notification)


def rewritten_heights(events: Iterator[LedgerEvent]) -> set[int]:
    """Heights whose block a reorganization replaced after the chain first stood above them (where a replay
    truncated at the height stopped): those where a truncated replay and the live views may differ."""
    stood_above: set[int] = set()  # heights the chain has stood above so far
    rewritten: set[int] = set()
    for event in events:
        if isinstance(event, ChainReorganized):
            rewritten |= {h for h in stood_above if h > event.ancestor_height}
        height = getattr(event, "height", -1)
        stood_above |= {h for h in range(height) if above_height(event, h)}
    return rewritten


# ------------------------------------------------------------------------------------------------ GraphQL

SCHEMA = build_schema()
INTROSPECTION = SCHEMA.introspect()
CLIENT_SCHEMA = build_client_schema(INTROSPECTION)
QUERY_TYPE = CLIENT_SCHEMA.query_type
assert QUERY_TYPE is not None
AT_HEIGHT_FIELDS = sorted(name for name, field in QUERY_TYPE.fields.items() if "atHeight" in field.args)
# (type, field) -> its arguments without a default that cannot be null. From the introspection itself: a client
# schema built from it drops enum defaults (`finality: Finality! = LATEST` would look required).
REQUIRED = {
    (t["name"], f["name"]): [
        a["name"] for a in f["args"] if a["type"]["kind"] == "NON_NULL" and a["defaultValue"] is None
    ]
    for t in INTROSPECTION["__schema"]["types"] if t["kind"] == "OBJECT"
    for f in t["fields"] or []
}


def _required(type_name: str, field: str) -> list[str]:
    return REQUIRED[(type_name, field)]


def selection(of: GraphQLOutputType, depth: int = SELECTION_DEPTH_MAX) -> str | None:
    """Every field of the type that needs no argument, nested down to `depth` (leaves: ""; nothing: None)."""
    named = get_named_type(of)
    if is_leaf_type(named):
        return ""
    if depth == 0 or not isinstance(named, GraphQLObjectType):
        return None
    parts = []
    for name, field in named.fields.items():
        if _required(named.name, name):
            continue
        inner = selection(field.type, depth - 1)
        if inner is not None:
            parts.append(f"{name} {{ {inner} }}" if inner else name)
    return " ".join(parts) or None


def query_of(field: str, arguments: dict[str, Any]) -> str:
    listed = ", ".join(f"{name}: {json.dumps(value)}" for name, value in arguments.items())
    inner = selection(QUERY_TYPE.fields[field].type)
    return f"{{ {field}{f'({listed})' if listed else ''}{f' {{ {inner} }}' if inner else ''} }}"


def ask(reads: Reads, query: str) -> dict[str, Any]:
    context = Context(request=None, response=None, reads=reads)  # no HTTP request here

    async def run() -> Any:
        return await SCHEMA.execute(query, context_value=context)

    result = anyio.run(run)
    return {"data": result.data, "errors": [e.message for e in result.errors or []]}


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def log_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerApplication]:
    data_dir = tmp_path_factory.mktemp("point-in-time") / "data"
    build_log(data_dir)
    app = LedgerApplication(env=Settings(data_dir=data_dir).event_store_env())
    yield app
    app.close()


@pytest.fixture(scope="module")
def stores(chdb_dsn: str) -> Iterator[Callable[[], ProjectionStore]]:
    made: list[ProjectionStore] = []

    def fresh() -> ProjectionStore:
        made.append(ProjectionStore(chdb_dsn, f"pit_{uuid.uuid4().hex[:12]}"))
        return made[-1]

    yield fresh
    for store in made:
        store.drop()
        store.close()


@pytest.fixture(scope="module")
def live(log_app: LedgerApplication, stores: Callable[[], ProjectionStore]) -> Reads:
    """The views as the embedded follower keeps them, over the whole log."""
    store = stores()
    Follower(log_app, store).run_until_caught_up()
    return Reads(ReadModel(store))


@pytest.fixture(scope="module")
def truncated(log_app: LedgerApplication, stores: Callable[[], ProjectionStore]) -> Callable[[int], Reads]:
    """A replay truncated at a height, in a fresh store (made once per height)."""
    made: dict[int, Reads] = {}

    def at(height: int) -> Reads:
        if height not in made:
            store = stores()
            result = replay(log_app, store, to_height=height)
            assert result.stopped_at_height == (height < TOP) and result.poison == 0, result
            made[height] = Reads(ReadModel(store))
        return made[height]

    return at


# ------------------------------------------------------------------------------------------------ tests


def test_the_log_rewrites_only_height_10_and_finalizes_it(log_app: LedgerApplication, live: Reads) -> None:
    assert rewritten_heights(events_of(log_app)) == REWRITTEN
    head = ask(live, "{ head { height finalizedHeight } }")
    assert head == {"data": {"head": {"height": TOP, "finalizedHeight": TOP}}, "errors": []}


def test_every_field_that_takes_at_height_is_covered() -> None:
    assert "account" in AT_HEIGHT_FIELDS
    for field in AT_HEIGHT_FIELDS:
        required = _required(QUERY_TYPE.name, field)
        missing = [a for a in required if a not in ARGUMENT_VALUES]
        assert not missing, f"{field}: add values for its required argument(s) {missing} to ARGUMENT_VALUES"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(AT_HEIGHT_FIELDS), height=st.sampled_from(EXACT_HEIGHTS), pick=st.integers(0, 10**6))
@example(field="account", height=3, pick=0)  # the block at 3 was replaced while it was the tip
@example(field="account", height=11, pick=0)  # at 11 the chain had never stood above 11 before the reorg
@example(field="account", height=0, pick=1)
def test_at_height_equals_a_replay_truncated_there(
    live: Reads, truncated: Callable[[int], Reads], field: str, height: int, pick: int
) -> None:
    required = _required(QUERY_TYPE.name, field)
    arguments = {name: ARGUMENT_VALUES[name][(pick >> (3 * i)) % len(ARGUMENT_VALUES[name])]
                 for i, name in enumerate(required)}
    then = ask(live, query_of(field, {**arguments, "atHeight": height}))
    replayed = ask(truncated(height), query_of(field, arguments))
    assert "internal error" not in then["errors"] + replayed["errors"], (then, replayed)
    assert then == replayed


def test_a_rewritten_height_is_where_the_two_differ(live: Reads, truncated: Callable[[int], Reads]) -> None:
    """At 10 the live views answer with the block that replaced it (BOB sent ALICE 7 CELL), the truncated
    replay with the replaced one (ALICE sent BOB 5 CELL): the reason the property excludes such heights."""
    query = "{ account(address: %s%s) { height balances { asset amount } } }"
    before = ask(live, query % (json.dumps(ALICE.address), ", atHeight: 9"))["data"]["account"]
    then = ask(live, query % (json.dumps(ALICE.address), ", atHeight: 10"))["data"]["account"]
    replayed = ask(truncated(10), query % (json.dumps(ALICE.address), ""))["data"]["account"]

    def cell(answer: dict[str, Any]) -> int:
        return int(next(b["amount"] for b in answer["balances"] if b["asset"] == "CELL"))

    assert then["height"] == replayed["height"] == 10
    assert cell(then) - cell(before) == 7 * CELL
    assert cell(replayed) - cell(before) == -5 * CELL
