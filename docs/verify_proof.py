"""Check a tally liability proof (tally-por-v1) against the published root: python verify_proof.py PROOF ROOT

Needs only Python 3 and the blake3 package (pip install blake3). Exit 0 with the counted balance, or 1 with why.
"""

import json
import sys

from blake3 import blake3


def node(tag, *parts):
    return blake3(tag + b"".join(parts)).digest()


def check(proof, published_root):
    if proof["scheme"] != "tally-por-v1":
        raise ValueError("unknown scheme")
    leaf = proof["leaf"]
    if "account_secret" in leaf:  # my own proof: my leaf id is derived from my address
        label = f"tally-por-v1:leaf:{proof['chain_id']}:{proof['asset']}:{proof['height']}:{leaf['address']}"
        if blake3(bytes.fromhex(leaf["account_secret"]) + label.encode()).hexdigest() != leaf["blinded_id"]:
            raise ValueError("the blinded id is not mine")
    h, s = node(b"\x02", bytes.fromhex(leaf["blinded_id"]), leaf["balance"].to_bytes(16, "big")), leaf["balance"]
    for step in proof["path"]:
        sibling = (bytes.fromhex(step["hash"]), step["sum"])
        left, right = (sibling, (h, s)) if step["side"] == "left" else ((h, s), sibling)
        h = node(b"\x03", left[0], left[1].to_bytes(16, "big"), right[0], right[1].to_bytes(16, "big"))
        s = left[1] + right[1]
    if proof["leaf_count"] != 2 ** len(proof["path"]):
        raise ValueError("the path is not as long as the tree is deep")
    if h.hex() != published_root or h.hex() != proof["root"] or s != proof["total"]:
        raise ValueError("the path does not lead to the published root and total")
    return leaf["balance"]


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        document = json.load(f)
    try:
        balance = check(document, sys.argv[2])
    except (ValueError, KeyError, TypeError, OverflowError) as problem:
        sys.exit(f"NOT VERIFIED: {problem}")
    print(f"verified: {balance} {document['asset']} counted in root {sys.argv[2]} at height {document['height']}")
