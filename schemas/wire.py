"""The command wire format as JSON Schema (Draft 2020-12): `schemas/jsonschema/*.json`, and a validator.

The schema files document the wire format for client authors; tests/test_jsonschema.py keeps them in step
with the ledger. The ledger's authority stays `schemas/commands.py`: what JSON Schema cannot state (a
role field equal to `signer`, a tx chain_id equal to its block's, unique node_ids, stake >= min_stake) is
listed in each file's `$comment` and checked only there.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry
from referencing.jsonschema import DRAFT202012

BASE_URI = "https://tally.invalid/schemas/v1/"  # a name, not a location (.invalid is reserved, RFC 2606)
SCHEMA_FILES = (
    "defs", "command", "genesis", "block", "tx", "transfer", "enroll", "unenroll", "slash",
    "bridge_deposit", "withdraw_request", "withdraw_confirm", "withdraw_reject", "vote", "attest_reserves",
)
MESSAGE_CHARS_MAX = 200  # an ML-DSA signature is 6.6 KB of hex: never echo it whole


def load(name: str) -> dict[str, Any]:
    """The schema `name` (a file stem of SCHEMA_FILES) as a dict."""
    text = resources.files("schemas").joinpath("jsonschema").joinpath(f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _is_json_integer(_checker: Any, instance: Any) -> bool:
    # DOMAIN.md: no bool, fraction or exponent. jsonschema would count 1.0 (a Python float) as an integer.
    return type(instance) is int


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # ECMA-262's `$` (no multiline) matches only at the very end; Python's `$` also before a final "\n".
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


WireValidator = validators.extend(
    Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_json_integer),
)


def _as_wire(schema: dict[str, Any]) -> dict[str, Any]:
    # jsonschema switches to the validator class a `$schema` names whenever it enters a resource that has
    # one, which would drop the strict integers and ECMA patterns above for every referenced file.
    return {k: v for k, v in schema.items() if k != "$schema"}


@functools.cache
def registry() -> Registry:
    return Registry().with_resources(
        (f"{BASE_URI}{name}.json", DRAFT202012.create_resource(_as_wire(load(name)))) for name in SCHEMA_FILES
    )


@functools.cache
def validator(name: str = "command") -> Any:
    """A validator for the schema `name`, resolving the others by their $id."""
    return WireValidator(_as_wire(load(name)), registry=registry())


def validate(command: Any, schema: str = "command") -> list[str]:
    """Every way `command` breaks the wire format, as "path: message" lines; [] when it conforms."""
    errors = sorted(validator(schema).iter_errors(command), key=lambda e: (e.json_path, e.message))
    return [f"{e.json_path}: {_shorten(e)}"[:MESSAGE_CHARS_MAX] for e in errors]


def _shorten(error: ValidationError) -> str:
    # jsonschema starts most messages with the whole instance (a slash's evidence, a 6.6 KB signature):
    # abbreviate it so that what is wrong ("is too long") survives the cut to MESSAGE_CHARS_MAX.
    whole = repr(error.instance)
    if len(whole) > 60 and error.message.startswith(whole):
        return _short(error.instance) + error.message.removeprefix(whole)
    return error.message
