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
