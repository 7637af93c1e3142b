"""api/strict_json.py: exact integers, floats handed on, repeated keys and lone surrogates marked, non-JSON raises."""

from __future__ import annotations

import pytest

from api.strict_json import StrictJSONError, Unacceptable, loads, problem_in


def test_integers_are_exact_and_clean_bodies_are_not_suspicious() -> None:
    doc = loads(b'{"amount": 9223372036854775807, "total": 123456789012345678901234567890, "neg": -0}')
    assert doc.value == {"amount": 2**63 - 1, "total": 123456789012345678901234567890, "neg": 0}
    assert not doc.suspicious
    assert problem_in(doc.value) is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"a": 1, "a": 2}', ["duplicate key", "'a'"]),
        (b'{"x": {"b": [1, {"c": 1, "c": 1}]}}', ["duplicate key", "'c'"]),
        (b'{"memo": "\\ud800"}', ["surrogate"]),
    ],
)
def test_forbidden_values_are_named(body: bytes, words: list[str]) -> None:
    doc = loads(body)
    assert doc.suspicious
    problem = problem_in(doc.value)
    assert problem is not None
    for word in words:
        assert word in problem


@pytest.mark.parametrize(
    ("body", "number"),
    [
        (b'{"amount": 1.5}', 1.5),
        (b'{"amount": 1e3}', 1000.0),
        (b'{"amount": 10E-2}', 0.1),
        (b'{"amount": 1.0}', 1.0),
        (b'{"amount": 1e400}', float("inf")),
        (b'{"amount": -Infinity}', float("-inf")),
        (b'{"amount": Infinity}', float("inf")),
    ],
)
def test_non_integers_are_handed_on_as_floats(body: bytes, number: float) -> None:
    # The ledger's checks refuse a float wherever an integer belongs, with the reason of that place.
    doc = loads(body)
    assert type(doc.value["amount"]) is float and doc.value["amount"] == number
    assert not doc.suspicious and problem_in(doc.value) is None


def test_nan_is_handed_on_as_a_float() -> None:
    amount = loads(b'{"amount": NaN}').value["amount"]
    assert type(amount) is float and amount != amount


def test_a_valid_surrogate_pair_is_fine() -> None:
    doc = loads(b'{"memo": "\\ud83d\\ude00"}')
    assert doc.suspicious  # the escape was seen, the walk finds nothing
    assert problem_in(doc.value) is None
    assert doc.value == {"memo": "\U0001f600"}


def test_markers_stay_with_their_command() -> None:
    doc = loads(b'[{"a": 1}, {"a": {"b": 1, "b": 2}}, {"a": 3}]')
    assert [problem_in(c) for c in doc.value][0::2] == [None, None]
    assert isinstance(doc.value[1]["a"], Unacceptable)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["empty"]),
        (b"  \n", ["empty"]),
        (b"{", ["invalid JSON", "line 1"]),
        (b'{"a": 1,}', ["invalid JSON"]),
        (b"\xff\xfe{}", ["not UTF-8"]),
        (b'{"a": 01}', ["invalid JSON"]),
        (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
        (b'{"a": ' + b"9" * 5000 + b"}", ["invalid JSON"]),
    ],
)
def test_non_json_raises(body: bytes, words: list[str]) -> None:
    with pytest.raises(StrictJSONError) as info:
        loads(body)
    for word in words:
        assert word in str(info.value)
