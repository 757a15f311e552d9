"""Redaction of secrets' values from what a jail sends back (execution.redaction)."""

import time

from execution.redaction import Redactor
from execution.sandbox import SandboxResult, Status

SECRETS = {"API_KEY": "sk-live-abcdef", "SHORT": "abcdefgh", "OTHER": "zzzz-9999"}


def test_each_value_becomes_its_marker_inside_strings():
    redact = Redactor(SECRETS)
    assert redact.text("key=sk-live-abcdef; again sk-live-abcdef") == (
        "key=[secret:API_KEY]; again [secret:API_KEY]"
    )
    assert redact.text("nothing here") == "nothing here"


def test_the_longest_value_wins_where_values_overlap():
    redact = Redactor({"LONG": "abcdefgh-ijk", "PART": "abcdefgh", "TAIL": "fgh-ijk-lmn"})
    # PART is inside LONG, TAIL overlaps LONG's end: nothing of any of them is left.
    assert redact.text("x abcdefgh-ijk-lmn y abcdefgh") == "x [secret:LONG] y [secret:PART]"


def test_json_values_are_walked_keys_included():
    redact = Redactor(SECRETS)
    value = {"sk-live-abcdef": ["a zzzz-9999 b", 1, None, {"k": "abcdefgh"}], "n": 2.5}
    assert redact.value(value) == {
        "[secret:API_KEY]": ["a [secret:OTHER] b", 1, None, {"k": "[secret:SHORT]"}],
        "n": 2.5,
    }


def test_a_whole_sandbox_result_is_redacted():
    result = SandboxResult(
        status=Status.OK,
        result={"kind": "step", "name": "use sk-live-abcdef", "output": "zzzz-9999"},
        error={"type": "E", "message": "abcdefgh"},
        stdout="printed sk-live-abcdef\n",
        stderr="Traceback: ValueError: zzzz-9999",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_seconds=0.1,
        cpu_seconds=0.1,
        peak_memory_bytes=None,
        progress=({"kind": "intent", "name": "use sk-live-abcdef"},),
    )
    clean = Redactor(SECRETS).result(result)
    text = repr(clean)
    assert all(value not in text for value in SECRETS.values())
    assert clean.result["name"] == "use [secret:API_KEY]"
    assert clean.progress[0]["name"] == "use [secret:API_KEY]"
    assert clean.stderr == "Traceback: ValueError: [secret:OTHER]"
    assert Redactor({}).result(result) is result  # no secrets, nothing to do


def test_it_is_linear_on_hostile_text():
    # Values that share a long prefix with the text: a backtracking matcher would crawl.
    secrets = {f"K{i}": "a" * 4000 + str(i) for i in range(100)}
    text = "a" * 1_000_000
    started = time.monotonic()
    assert Redactor(secrets).text(text) == text
    assert time.monotonic() - started < 5


def test_values_with_quotes_backslashes_and_non_ascii_are_found_in_parsed_strings():
    # Redaction works on the parsed outcome, not its JSON text, so escaping hides nothing.
    value = 'pa"ss\\wörd-✓'
    redact = Redactor({"ODD": value})
    assert redact.value({"out": f"<{value}>", "list": [value]}) == {
        "out": "<[secret:ODD]>",
        "list": ["[secret:ODD]"],
    }
