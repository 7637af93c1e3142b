"""schemas/commands.py: well-formedness of wire commands, one reason code per command kind."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import build, commands
from schemas.limits import AMOUNT_MAX, PARAM_DEFAULTS
from schemas.reasons import Rejection
from tests.chain import ACCOUNTS, ALICE, BOB, CHAIN_ID, FUNDS, STAKE, genesis_command, keypair, validators
from tests.malformed import (
    BLOCK_CASES,
    COMMAND_CASES,
    EQUIVOCATOR,
    EVIDENCE_HASHES,
    GENESIS_CASES,
    TX_CASES,
    VOTE_CASES,
    Case,
    as_kind,
)

PARENT = "ab" * 32


def transfer(**fields: Any) -> dict[str, Any]:
    return {**build.transfer(CHAIN_ID, ALICE, BOB.address, 5, nonce=0, fee=1), **fields}


def block(txs: list[Any] | None = None) -> dict[str, Any]:
    v = validators()[0]
    return build.block(CHAIN_ID, 1, PARENT, v.node_id, v.key, 1_000, [transfer()] if txs is None else txs)


def genesis() -> dict[str, Any]:
    """Two validators, two relayers, three allocations: what every genesis case mutates."""
    return genesis_command(relayers=[("relayer-a", keypair("relayer-a")), ("relayer-b", keypair("relayer-b"))])


def rejected(reason: str, check: Any, *args: Any) -> Rejection:
    with pytest.raises(Rejection) as info:
        check(*args)
    assert info.value.reason == reason, info.value
    assert info.value.message
    return info.value


@pytest.mark.parametrize(("case", "command", "reason"), COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
def test_no_command_at_all(case: str, command: Any, reason: str) -> None:
    rejected(reason, commands.command_kind, command)


@pytest.mark.parametrize("kind", ["genesis", "block", "vote"])
def test_command_kinds(kind: str) -> None:
    assert commands.command_kind({"kind": kind}) == kind


def test_a_well_formed_transfer_returns_its_key() -> None:
    assert commands.check_tx_shape(transfer(), 0, CHAIN_ID) == ("ml-dsa-65", ALICE.pk)
    tx = build.transfer(CHAIN_ID, keypair("carol", "ml-dsa-87"), BOB.address, AMOUNT_MAX, nonce=AMOUNT_MAX,
                        fee=AMOUNT_MAX)
    assert commands.check_tx_shape(tx, 3, CHAIN_ID)[0] == "ml-dsa-87"
    # A self-transfer and a zero fee are well formed; so is any well-formed asset symbol.
    commands.check_tx_shape(transfer(to=ALICE.address, fee=0, asset="USDC2"), 0, CHAIN_ID)


@pytest.mark.parametrize("case", TX_CASES, ids=[c.id for c in TX_CASES])
def test_malformed_tx(case: Case) -> None:
    error = rejected("malformed_tx", commands.check_tx_shape, case.mutate(transfer()), 4, CHAIN_ID)
    assert error.message.startswith("tx 4:")
    assert case.field and case.field in error.message, error.message


@pytest.mark.parametrize("kind", commands.TX_KINDS_SUPPORTED)
def test_the_base_of_each_kinds_cases_is_well_formed(kind: str) -> None:
    """tests/malformed.py breaks these; unbroken, they pass (and are what schemas/build.py makes). Relayer txs
    carry no nonce."""
    tx = as_kind(kind)(transfer(nonce=7))
    assert tx["kind"] == kind and tx["chain_id"] == CHAIN_ID and set(tx) == commands.TX_FIELDS[kind]
    assert tx.get("nonce", 7) == 7
    assert commands.check_tx_shape(tx, 0, CHAIN_ID) == ("ml-dsa-65", ALICE.pk)


def test_every_domain_kind_is_supported() -> None:
    assert commands.TX_KINDS_SUPPORTED == commands.TX_KINDS
    assert set(commands.TX_FIELDS) == set(commands.TX_ROLE) == set(commands.TX_KINDS)
    assert [k for k in commands.TX_KINDS if "nonce" not in commands.TX_FIELDS[k]] == [
        "bridge_deposit", "withdraw_confirm", "withdraw_reject"
    ]


def test_well_formed_enroll_unenroll_and_slash() -> None:
    carol = keypair("carol", "ml-dsa-87")
    v = validators()[2]  # an ML-DSA-87 validator key
    enroll = build.enroll(CHAIN_ID, carol, "node-9", "GPU-0009", 0, v.key, nonce=AMOUNT_MAX)  # stake 0: a receipt
    assert commands.check_tx_shape(enroll, 0, CHAIN_ID) == ("ml-dsa-87", carol.pk)
    commands.check_tx_shape(build.enroll(CHAIN_ID, ALICE, "n" * 128, "g" * 128, AMOUNT_MAX, v.key, nonce=0),
                            0, CHAIN_ID)
    commands.check_tx_shape(build.unenroll(CHAIN_ID, carol, "node-unknown", nonce=0), 0, CHAIN_ID)
    votes = build.evidence(CHAIN_ID, v.node_id, v.key, AMOUNT_MAX, ("00" * 32, "ff" * 32))
    commands.check_tx_shape(build.slash(CHAIN_ID, carol, v.node_id, votes, nonce=0), 0, CHAIN_ID)


def evidence_variants() -> dict[str, list[dict[str, Any]]]:
    """Evidence that is well formed but no proof of an equivocation: the ledger's answer is a receipt,
    invalid_evidence (DOMAIN.md "Validators and slashing"), not malformed_tx."""
    v, other = EQUIVOCATOR, validators()[1]
    a, b = build.evidence(CHAIN_ID, v.node_id, v.key, 1, EVIDENCE_HASHES)
    return {
        "same_block_hash": [a, a],
        "different_heights": [a, build.vote(CHAIN_ID, v.node_id, v.key, 2, EVIDENCE_HASHES[1])],
        "different_node_ids": [a, build.vote(CHAIN_ID, other.node_id, other.key, 1, EVIDENCE_HASHES[1])],
        "other_chain_id": [a, build.vote("other-chain", v.node_id, v.key, 1, EVIDENCE_HASHES[1])],
        "signed_by_another_key": [a, build.vote(CHAIN_ID, v.node_id, other.key, 1, EVIDENCE_HASHES[1])],
        "signature_not_a_signature": [a, {**b, "sig": ""}],
        "reversed": [b, a],
    }


@pytest.mark.parametrize("name", evidence_variants())
def test_evidence_that_proves_nothing_is_still_well_formed(name: str) -> None:
    tx = build.slash(CHAIN_ID, ALICE, EQUIVOCATOR.node_id, evidence_variants()[name], nonce=0)
    commands.check_tx_shape(tx, 0, CHAIN_ID)
    # The tx's node_id naming another validator than the votes is invalid_evidence too.
    commands.check_tx_shape({**tx, "node_id": "node-1"}, 0, CHAIN_ID)


PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))  # every printable ASCII character, 95 of them


def test_well_formed_bridge_txs() -> None:
    """The edges of each bridge field are well formed: whether the signer is a relayer, the reserve_id is new or
    pending, the asset is known or the funds suffice are receipts, not form."""
    relayer = keypair("relayer-b", "ml-dsa-87")
    text_max = (PRINTABLE * 3)[:256]
    deposit = build.bridge_deposit(CHAIN_ID, relayer, "r" * 128, "CELLS", BOB.address, AMOUNT_MAX,
                                   from_chain="a", external_tx="")
    assert commands.check_tx_shape(deposit, 0, CHAIN_ID) == ("ml-dsa-87", relayer.pk)
    for asset in ("U1", "CELL0", "XCELL", "A" * 16):
        commands.check_tx_shape(build.bridge_deposit(CHAIN_ID, ALICE, "deposit-1", asset, ALICE.address, 1,
                                                     from_chain="e" * 128, external_tx=text_max), 0, CHAIN_ID)
    request = build.withdraw_request(CHAIN_ID, ALICE, "A.b_c:d-9", "USDC", AMOUNT_MAX, nonce=AMOUNT_MAX,
                                     to_chain="ethereum:1", external_address=text_max)
    commands.check_tx_shape(request, 0, CHAIN_ID)
    commands.check_tx_shape(build.withdraw_request(CHAIN_ID, ALICE, "w", "USDC", 1, nonce=0,
                                                   external_address=""), 0, CHAIN_ID)
    for text in ("", " ", text_max, PRINTABLE):
        commands.check_tx_shape(build.withdraw_confirm(CHAIN_ID, relayer, "w", text), 0, CHAIN_ID)
        commands.check_tx_shape(build.withdraw_reject(CHAIN_ID, relayer, "w", text), 0, CHAIN_ID)


def test_a_well_formed_block_header() -> None:
    commands.check_block_shape(block())
    commands.check_block_shape(block(txs=[]))
    commands.check_block_shape({**block(), "timestamp_ms": AMOUNT_MAX, "height": AMOUNT_MAX})


def test_block_height_0_is_well_formed() -> None:
    """DOMAIN bounds numbers to 0..2**63-1 only: a block at height 0 is `bad_height` (its parent's height + 1
    is never 0), not malformed, so unknown_chain / unknown_parent / ... still take precedence."""
    commands.check_block_shape({**block(), "height": 0})


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c.id for c in BLOCK_CASES])
def test_malformed_block(case: Case) -> None:
    rejected("malformed_block", commands.check_block_shape, case.mutate(block()))


def test_a_well_formed_vote() -> None:
    v = validators()[2]
    commands.check_vote_shape(build.vote(CHAIN_ID, v.node_id, v.key, 0, PARENT))


@pytest.mark.parametrize("case", VOTE_CASES, ids=[c.id for c in VOTE_CASES])
def test_malformed_vote(case: Case) -> None:
    v = validators()[0]
    vote = build.vote(CHAIN_ID, v.node_id, v.key, 1, PARENT)
    error = rejected("malformed_vote", commands.check_vote_shape, case.mutate(vote))
    assert case.field and case.field in error.message, error.message


@pytest.mark.parametrize("case", GENESIS_CASES, ids=[c.id for c in GENESIS_CASES])
def test_invalid_genesis(case: Case) -> None:
    rejected("invalid_genesis", commands.check_genesis, case.mutate(genesis()))


def test_genesis_params_default_and_bps_may_be_10000() -> None:
    facts = commands.check_genesis(genesis())
    assert facts["params"] == PARAM_DEFAULTS
    given = {"slash_bps": 10_000, "reporter_bps": 10_000, "block_reward": 0, "max_block_txs": 3}
    facts = commands.check_genesis({**genesis(), "params": given})
    assert facts["params"] == {**PARAM_DEFAULTS, **given}


def test_genesis_params_and_relayers_may_be_omitted() -> None:
    g = {k: v for k, v in genesis().items() if k not in ("params", "relayers")}
    facts = commands.check_genesis(g)
    assert facts["params"] == PARAM_DEFAULTS
    assert facts["relayers"] == []


def test_genesis_stake_equal_to_min_stake_is_enough() -> None:
    g = genesis_command(vals=validators((STAKE, 5)), params={"min_stake": 5})
    assert [v["stake"] for v in commands.check_genesis(g)["validators"]] == [STAKE, 5]


def test_genesis_allocations_to_one_address_add_up() -> None:
    allocs = [(ALICE.address, 3), (BOB.address, 4), (ALICE.address, 5), (ALICE.address, 0)]
    facts = commands.check_genesis(genesis_command(allocations=allocs))
    assert sorted(facts["allocations"]) == sorted([[ALICE.address, 8], [BOB.address, 4]])


def test_genesis_allocations_may_not_add_up_to_2_63() -> None:
    """One figure per address: merged allocations are bounded like any balance (this project's choice)."""
    commands.check_genesis(genesis_command(allocations=[(ALICE.address, AMOUNT_MAX - 1), (ALICE.address, 1)]))
    rejected("invalid_genesis", commands.check_genesis,
             genesis_command(allocations=[(ALICE.address, AMOUNT_MAX), (ALICE.address, 1)]))


def test_genesis_with_no_validators_and_no_allocations_is_valid() -> None:
    facts = commands.check_genesis(genesis_command(vals=[], allocations=[]))
    assert facts["validators"] == [] and facts["allocations"] == []


def test_default_genesis_funds() -> None:
    facts = commands.check_genesis(genesis())
    assert sorted(facts["allocations"]) == sorted([[k.address, FUNDS] for k in ACCOUNTS])
