import textwrap

import pytest

from execution.validation import validate_code


def check(code):
    return validate_code(code, max_bytes=10_000)


def test_good_code_passes():
    assert check("def run(event, step):\n    return 1\n").ok


def test_a_syntax_error_has_its_line_and_column():
    report = check("def run(event, step):\n    return (1,\n")
    assert not report.ok
    assert report.errors[0].line == 2


def test_a_missing_run_is_an_error():
    report = check("def main():\n    pass\n")
    assert "no run(event, step)" in report.errors[0].message


def test_run_must_take_event_and_step():
    assert "run must take (event, step)" in check("def run(event):\n    pass\n").errors[0].message
    assert "not async" in check("async def run(e, s):\n    pass\n").errors[0].message


def test_oversized_code_names_the_limit():
    report = validate_code("x = 1\n" * 5000, max_bytes=1000)
    assert "the limit is 1000 bytes" in report.errors[0].message


def test_risky_imports_and_calls_are_flagged_from_the_syntax_tree():
    code = (
        "import subprocess\nfrom os import system\nimport ctypes.util\n"
        "def run(event, step):\n    eval('1')\n    import os\n    os.system('x')\n"
        "    text = 'import socket'\n"
    )
    report = check(code)
    assert report.ok
    flagged = {(f.line, f.message.split(":")[0]) for f in report.flags}
    assert flagged == {
        (1, "imports subprocess"),
        (2, "imports os.system"),
        (3, "imports ctypes.util"),
        (5, "calls eval"),
        (7, "calls os.system"),
    }


def outside_step_flags(code: str) -> list[tuple[int, int, str]]:
    """(line, column, callable) of each flag for a call outside a step."""
    report = check(textwrap.dedent(code))
    assert report.ok
    return [
        (f.line, f.column, f.message.split()[1])
        for f in report.flags
        if "outside a step" in f.message
    ]


@pytest.mark.parametrize(
    ("setup", "call"),
    [
        ("import time", "time.time()"),
        ("import time as t", "t.monotonic()"),
        ("from time import perf_counter", "perf_counter()"),
        ("import time", "time.localtime()"),
        ("import datetime", "datetime.datetime.now()"),
        ("from datetime import datetime", "datetime.utcnow()"),
        ("from datetime import date", "date.today()"),
        ("import random", "random.random()"),
        ("from random import choice", "choice([1, 2])"),
        ("import random", "random.Random()"),
        ("import secrets", "secrets.token_hex()"),
        ("import uuid", "uuid.uuid4()"),
        ("from uuid import uuid1", "uuid1()"),
        ("import os", "os.urandom(8)"),
        ("", "open('/etc/hostname')"),
        ("import socket", "socket.create_connection(('x', 1))"),
        ("import urllib.request", "urllib.request.urlopen('http://x')"),
        ("from urllib.request import urlopen", "urlopen('http://x')"),
    ],
)
def test_each_nondeterministic_call_in_run_is_flagged_with_its_place_and_the_fix(setup, call):
    code = f"{setup}\ndef run(event, step):\n    x = 1\n    value = {call}\n    return value\n"
    report = check(code)
    assert report.ok  # a flag, for the author and reviewers; the upload is not refused
    (flag,) = [f for f in report.flags if "outside a step" in f.message]
    assert (flag.line, flag.column) == (4, 12)
    assert "move it into a step.do" in flag.message


def test_the_same_calls_inside_a_step_are_not_flagged():
    assert not outside_step_flags(
        """
        import random, time, uuid
        from datetime import datetime

        def stamp():
            return {"at": time.time(), "id": str(uuid.uuid4())}

        def helper():
            return datetime.now().isoformat()

        def roll():
            return helper() + str(random.random())

        def run(event, step):
            a = step.do("stamp", stamp)
            b = step.do("roll", fn=roll, retries={"limit": 2})
            c = step.do("inline", lambda: open("/tmp/x").read())
            rng = random.Random(event.payload["seed"])
            return [a, b, c, rng.random(), time.strftime("%Y", time.gmtime(0))]
        """
    )


def test_calls_outside_a_step_are_found_at_import_in_helpers_and_in_step_arguments():
    flags = outside_step_flags(
        """
        import time, random
        STARTED = time.time()

        def now():
            return time.monotonic()

        def unused():
            return random.random()

        def run(event, step):
            when = now()
            step.do(f"at {random.randint(1, 9)}", lambda: 1)
            return [step.do("ok", lambda: time.time()), when]
        """
    )
    assert flags == [(3, 10, "time.time"), (6, 11, "time.monotonic"), (13, 18, "random.randint")]


def test_a_shadowing_name_that_is_not_imported_is_not_flagged():
    assert not outside_step_flags(
        """
        class clock:
            @staticmethod
            def time():
                return 0

        def run(event, step):
            return clock.time()
        """
    )
