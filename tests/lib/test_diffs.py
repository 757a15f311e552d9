from lib.diffs import diff_lines


def test_a_diff_marks_each_line_with_its_kind():
    old = "def run(event, step):\n    return 1\n"
    new = "def run(event, step):\n    return 2\n"

    lines = diff_lines(old, new, "v1", "v2")

    assert lines == [
        ("meta", "--- v1"),
        ("meta", "+++ v2"),
        ("hunk", "@@ -1,2 +1,2 @@"),
        ("ctx", " def run(event, step):"),
        ("del", "-    return 1"),
        ("add", "+    return 2"),
    ]


def test_two_equal_versions_have_an_empty_diff():
    assert diff_lines("x = 1\n", "x = 1\n", "v1", "v2") == []


def test_a_removed_line_that_starts_like_a_header_is_still_a_removal():
    lines = diff_lines("-- a\nb\n", "b\n", "v1", "v2")

    assert ("del", "--- a") in lines
