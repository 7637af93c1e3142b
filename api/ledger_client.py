"""What the CLI asks of a running ledger over HTTP: GraphQL reads, `POST /v1/txs`, and waiting for a receipt.

Fields that later versions add (`validators`, `slashReceipt`, a validator's key) are found by introspection: the
CLI selects the fields the server has and says so plainly when one is missing, instead of failing on a guess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

RECEIPT_POLL_INTERVAL_MS = 250
RECEIPT_WAIT_S_DEFAULT = 60.0
FINAL_STATUSES = ("applied", "rejected")  # a `reverted` receipt may still change: keep waiting
_TYPE_REF = "kind name ofType { kind name ofType { kind name ofType { kind name } } }"
_TYPE_QUERY = (
    "query($name: String!) { __type(name: $name) { name kind enumValues { name } "
    f"fields {{ name args {{ name type {{ {_TYPE_REF} }} }} type {{ {_TYPE_REF} }} }} }} }}"
)
_LEAF_KINDS = ("SCALAR", "ENUM")


class Unreachable(Exception):
    """The ledger could not be reached, or answered something that is not its API."""


class LedgerError(Exception):
    """The ledger answered, and the answer is a refusal or an error; the message says which."""


class ReceiptTimeout(Exception):
    pass


@dataclass(frozen=True)
class TypeRef:
    kind: str
    name: str | None
    of_type: TypeRef | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> TypeRef:
        inner = raw.get("ofType")
        return cls(raw["kind"], raw.get("name"), None if inner is None else cls.of(inner))

    @property
    def named(self) -> TypeRef:
        """The named type under any NON_NULL and LIST wrappers."""
        return self if self.of_type is None else self.of_type.named

    def __str__(self) -> str:
        """The type as a GraphQL variable declaration writes it."""
        if self.kind == "NON_NULL":
            return f"{self.of_type}!"
        if self.kind == "LIST":
            return f"[{self.of_type}]"
        return str(self.name)


@dataclass(frozen=True)
class Field:
    name: str
    type: TypeRef
    args: dict[str, TypeRef]


class LedgerClient:
    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = client
        self._types: dict[str, dict[str, Any] | None] = {}

    # ------------------------------------------------------------------------------------------ transport

    def _post(self, path: str, body: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            return self.http.post(url, json=body)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {url}: {exc}") from exc

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self._post("/graphql", {"query": query, "variables": variables})
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
            raise Unreachable(f"{self.base_url}/graphql answered HTTP {response.status_code}: {response.text[:300]}")
        if body.get("errors"):
            raise LedgerError("; ".join(str(e.get("message", e)) for e in body["errors"]))
        return dict(body["data"])

    def post_txs(self, txs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The pool's answer per tx; a refusal of the whole request (no devnet, pool full) is a LedgerError."""
        response = self._post("/v1/txs", txs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 and isinstance(body, dict) and "message" in body:
            raise LedgerError(f"{body.get('reason')}: {body['message']} (HTTP {response.status_code})")
        if not isinstance(body, list) or len(body) != len(txs):
            raise Unreachable(f"{self.base_url}/v1/txs answered HTTP {response.status_code}: {response.text[:300]}")
        return body

    # ---------------------------------------------------------------------------------------------- reads

    def chain_id(self) -> str:
        head = self.graphql("{ head { chainId } }")["head"]
        if head is None:
            raise LedgerError("the ledger has no chain yet (no genesis projected)")
        return str(head["chainId"])

    def next_nonce(self, address: str, chain_id: str) -> int:
        query = "query($a: String!, $c: String) { account(address: $a, chainId: $c) { nonce } }"
        return int(self.graphql(query, a=address, c=chain_id)["account"]["nonce"])

    def receipt(self, tx_id: str) -> dict[str, Any] | None:
        query = "query($t: String!) { receipt(txId: $t) { txId status reason height index blockHash chainId } }"
        receipt = self.graphql(query, t=tx_id)["receipt"]
        return None if receipt is None else dict(receipt)

    def wait_receipt(self, tx_id: str, timeout_s: float, poll_ms: int | None = None) -> dict[str, Any]:
        """The tx's receipt once it is applied or rejected (a block carried it and the views have it); polled
        every `poll_ms` (default RECEIPT_POLL_INTERVAL_MS, read at the call)."""
        poll_ms = RECEIPT_POLL_INTERVAL_MS if poll_ms is None else poll_ms
        deadline = time.monotonic() + timeout_s
        while True:
            receipt = self.receipt(tx_id)
            if receipt is not None and receipt["status"] in FINAL_STATUSES:
                return receipt
            if time.monotonic() >= deadline:
                seen = "no receipt" if receipt is None else f"receipt {receipt['status']}"
                raise ReceiptTimeout(f"tx {tx_id}: {seen} after {timeout_s:g} s")
            time.sleep(poll_ms / 1000)

    # -------------------------------------------------------------------------------------- introspection

    def type_info(self, name: str) -> dict[str, Any] | None:
        if name not in self._types:
            self._types[name] = self.graphql(_TYPE_QUERY, name=name)["__type"]
        return self._types[name]

    def field(self, type_name: str, name: str) -> Field | None:
        """A field of a type as the server describes it; None when it has no such field."""
        info = self.type_info(type_name)
        for raw in (info or {}).get("fields") or ():
            if raw["name"] == name:
                args = {a["name"]: TypeRef.of(a["type"]) for a in raw["args"]}
                return Field(name, TypeRef.of(raw["type"]), args)
        return None

    def root_field(self, name: str, what: str) -> Field:
        found = self.field("Query", name)
        if found is None:
            raise LedgerError(f"the ledger at {self.base_url} does not serve `{name}` yet ({what})")
        return found

    def leaf_selection(self, type_name: str, depth: int = 2) -> str:
        """Every scalar and enum field of a type, and those of its object fields down to `depth` levels. Lists of
        objects (a validator's history) are left out: each may cost the server a query per row of a page."""
        parts = []
        for raw in (self.type_info(type_name) or {}).get("fields") or ():
            if any(a["type"]["kind"] == "NON_NULL" for a in raw["args"]):
                continue  # a field with required arguments cannot be selected blindly
            ref = TypeRef.of(raw["type"])
            unwrapped = ref.of_type if ref.kind == "NON_NULL" and ref.of_type is not None else ref
            named = ref.named
            if unwrapped.kind == "LIST" and named.kind == "OBJECT":
                continue
            if named.kind in _LEAF_KINDS:
                parts.append(raw["name"])
            elif named.kind == "OBJECT" and depth > 1 and named.name:
                inner = self.leaf_selection(named.name, depth - 1)
                if inner:
                    parts.append(f"{raw['name']} {{ {inner} }}")
        return " ".join(parts)

    def enum_value(self, ref: TypeRef, value: str) -> str:
        """`value` as the argument's type spells it: an enum's own value name (matched ignoring case)."""
        named = ref.named
        if named.kind != "ENUM" or named.name is None:
            return value
        names = [e["name"] for e in (self.type_info(named.name) or {}).get("enumValues") or ()]
        for name in names:
            if name.lower() == value.lower():
                return name
        raise LedgerError(f"{value!r} is not one of {', '.join(n.lower() for n in names)}")

    # --------------------------------------------------------------------- validators (issue 4's read side)

    def validators(
        self, *, phase: str | None, first: int | None, after: str | None, chain_id: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of `validators(phase, first, after)`: the nodes and the cursor of the next page (None at the
        end)."""
        field = self.root_field("validators", "issue 4's validator views")
        given = {"phase": phase, "first": first, "after": after, "chainId": chain_id}
        values = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(values) - set(field.args))
        if unknown:
            raise LedgerError(f"the ledger's `validators` takes no {', '.join(unknown)}")
        if "phase" in values:
            values["phase"] = self.enum_value(field.args["phase"], values["phase"])
        connection = field.type.named.name or ""
        edge = self.field(connection, "edges")
        node = self.field(edge.type.named.name or "", "node") if edge is not None else None
        if node is None:
            raise LedgerError("the ledger's `validators` is not a connection (edges { cursor node })")
        declared = ", ".join(f"${k}: {field.args[k]}" for k in values)
        passed = ", ".join(f"{k}: ${k}" for k in values)
        query = (
            f"query{f'({declared})' if declared else ''} {{ validators{f'({passed})' if passed else ''} {{ "
            f"edges {{ cursor node {{ {self.leaf_selection(node.type.named.name or '')} }} }} "
            "pageInfo { hasNextPage endCursor } } }"
        )
        page = self.graphql(query, **values)["validators"]
        nodes = [e["node"] for e in page["edges"]]
        more = page["pageInfo"]["hasNextPage"]
        return nodes, page["pageInfo"]["endCursor"] if more else None

    def all_validators(self, *, phase: str | None, first: int | None, chain_id: str | None) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            nodes, after = self.validators(phase=phase, first=first, after=after, chain_id=chain_id)
            yield from nodes
            if after is None:
                return

    def slash_receipt(self, tx_id: str) -> dict[str, Any] | None:
        field = self.root_field("slashReceipt", "issue 4's slash receipts")
        selection = self.leaf_selection(field.type.named.name or "")
        query = f"query($t: String!) {{ slashReceipt(txId: $t) {{ {selection} }} }}"
        found = self.graphql(query, t=tx_id)["slashReceipt"]
        return None if found is None else dict(found)

    def validator_public_key(self, node_id: str, chain_id: str | None) -> dict[str, str]:
        """A validator's `{alg, pk}` from GraphQL `validator(nodeId)`, if the server serves its key."""
        field = self.root_field("validator", "issue 4's validator views")
        named = field.type.named.name or ""
        key = self.field(named, "key")
        if key is not None:
            selection = "key { alg pk }"
        elif self.field(named, "alg") is not None and self.field(named, "pk") is not None:
            selection = "alg pk"
        else:
            raise LedgerError(f"the ledger's `validator` at {self.base_url} serves no public key")
        with_chain = chain_id is not None and "chainId" in field.args
        query = (
            f"query($n: String!{', $c: String' if with_chain else ''}) "
            f"{{ validator(nodeId: $n{', chainId: $c' if with_chain else ''}) {{ {selection} }} }}"
        )
        found = self.graphql(query, n=node_id, **({"c": chain_id} if with_chain else {}))["validator"]
        if found is None:
            raise LedgerError(f"the ledger has no validator {node_id!r}")
        pair = found["key"] if key is not None else found
        if not pair or "alg" not in pair or "pk" not in pair:
            raise LedgerError(f"the ledger serves no key for validator {node_id!r}")
        return {"alg": str(pair["alg"]), "pk": str(pair["pk"])}
