"""A short log with every kind of event (transfers, an enrollment, a slash, bridge txs, a side block and a
reorganization, votes, finality, scheduled and requested attestations), built once per test session by the
`rich_log` fixture (tests/conftest.py) for the compliance tests. Read it, never write to it: copy it first."""

from __future__ import annotations

from pathlib import Path

from schemas import build
from schemas.settings import Settings
from tests.chain import ALICE, BOB, CAROL, CELL, STAKE, Chain, genesis_command, keypair, validators
from writes.service import LedgerService

RELAYER = keypair("relayer-a")
EVERY = 2


def build_rich_log(data_dir: Path) -> None:
    """Transfers, an enrollment, a slash, bridge txs, a side block and a reorg, votes, finality, attestations."""
    service = LedgerService(Settings(data_dir=data_dir, verify_workers=1, reserves_every_blocks=EVERY))
    try:
        vals = validators((2 * STAKE,) * 3)
        chain = Chain(service, genesis_command(vals=vals, relayers=[("relayer-a", RELAYER)]), vals)
        b1 = chain.apply([
            chain.transfer(ALICE, BOB.address, 3 * CELL, fee=1),
            build.bridge_deposit(chain.chain_id, RELAYER, "dep-1", "USDC", CAROL.address, 900),
            build.enroll(chain.chain_id, BOB, "node-new", "GPU-NEW", STAKE, keypair("node-new"), nonce=0),
        ])["hash"]
        chain.apply([
            build.withdraw_request(chain.chain_id, CAROL, "wd-1", "USDC", 100, nonce=0),
            build.slash(chain.chain_id, ALICE, "node-1",
                        build.evidence(chain.chain_id, "node-1", vals[1].key, 9, ("aa" * 32, "bb" * 32)), nonce=1),
        ])
        side = chain.submit(chain.block([chain.transfer(CAROL, ALICE.address, CELL, nonce=0)], parent=b1,
                                        proposer=2))["hash"]
        tip = chain.submit(chain.block([], parent=side, proposer=2))["hash"]  # a reorg of depth 1
        chain.finalize(tip, 3)  # final at 3: an attestation at 2
        chain.submit({"kind": "attest_reserves", "chain_id": chain.chain_id, "asset": "USDC"})
        chain.apply([build.withdraw_confirm(chain.chain_id, RELAYER, "wd-1")])
    finally:
        service.close()


