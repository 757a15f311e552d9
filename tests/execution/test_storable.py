"""The check of what PostgreSQL can store: right, and linear on what a jail can send."""

import json
import time

import pytest

from execution.storable import escaped, json_problem, text_problem

MIB = 2**20


def nested(depth: int) -> list:
    root = current = []
    for _ in range(depth):
        inner = []
        current.append(inner)
        current = inner
    return root


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": [1, 2.5, True, None, "é😀", {"b": ""}]}, None),
        ("\\u0000", None),
        (["\\\\\x00"], "a NUL character (\\u0000)"),
        ("a\x00", "a NUL character (\\u0000)"),
        ({"\x00": 1}, "a NUL character (\\u0000)"),
        ([["x", "\ud800"]], "a lone surrogate ('\\ud800')"),
        ({"a": {"b": [float("inf")]}}, "a number that is not finite"),
        (float("nan"), "a number that is not finite"),
        ([{1, 2}], "a value that is not JSON (Object of type set is not JSON serializable)"),
        (nested(200), None),
        (nested(10**5), "nesting too deep"),
    ],
)
def test_it_names_what_cannot_be_stored(value, problem):
    assert json_problem(value) == problem


def test_text_is_checked_for_nul_and_lone_surrogates_only():
    assert text_problem("plain, accents é and emoji 😀") is None
    assert text_problem("\udfff") == "a lone surrogate ('\\udfff')"


def test_logs_are_escaped_not_refused():
    assert escaped("a\x00b\ud800c é") == "a\\u0000b\\ud800c é"
    assert escaped("plain") == "plain"


SHAPES = {
    "small arrays": "[" + ",".join(["[0]"] * (MIB // 4)) + "]",
    "small objects": "[" + ",".join(['{"":0}'] * (MIB // 7)) + "]",
    "numbers": "[" + ",".join(["0"] * (MIB // 2)) + "]",
    "one long string, bad at the end": json.dumps("x" * MIB + "\ud800"),
    "many short strings": "[" + ",".join(['"\\u00e9"'] * (MIB // 9)) + "]",
    "many keys": "{" + ",".join(f'"{n}":0' for n in range(MIB // 10)) + "}",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_mebibyte_of_any_shape_is_checked_in_under_a_second(shape):
    value = json.loads(SHAPES[shape])

    started = time.perf_counter()
    json_problem(value)
    escaped(SHAPES[shape])

    assert time.perf_counter() - started < 1.0
