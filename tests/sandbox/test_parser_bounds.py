"""Every parser of bytes from a jail takes linear time: 1 MiB of hostile shapes, under 1 s each.

SANDBOX.md case 21. A parser that is quadratic on some shape holds the GIL for hours
on a megabyte; these shapes are the ones that were (or that a regex tends to be).
No jail runs here: the parsers are fed directly, as the read loops feed them.
"""

import contextlib
import time
from collections.abc import Callable

import pytest

from execution.sandbox.limits import Limits
from execution.sandbox.outcome import JailExit, classify
from execution.sandbox.process import Capture, JailRun
from execution.sandbox.protocol import NoteWatcher, loads, parse_result, split_channel
from execution.sandbox.warm_channel import FRAME_LENGTH, MAX_FRAME_BYTES, take_frame

MiB = 2**20
SECONDS = 1.0
PIECE = 64  # what a jail that writes a little at a time hands the note watcher


def fill(unit: bytes, head: bytes = b"", tail: bytes = b"") -> bytes:
    """head, then unit repeated to 1 MiB, then tail."""
    return head + unit * ((MiB - len(head) - len(tail)) // len(unit)) + tail


RESULT = b'{"ok": true, "result": '
NOTE = b'{"progress": {"kind": "intent", "name": '
LOADER = b"nsjail: /lib/libnl-3.so.200: no version information available (required by nsjail)\n"
SHAPES = {
    "an unterminated string of escaped quotes": fill(b'\\"', RESULT + b'"'),
    "a bare unterminated string of escaped quotes": fill(b'\\"', b'"'),
    "a string of backslashes": fill(b"\\\\", RESULT + b'"'),
    "an odd run of backslashes": fill(b"\\", b'"'),
    "quotes and backslashes": fill(b'"\\', b"["),
    "deep brackets": fill(b"[", RESULT),
    "deep brackets, closed": fill(b"[", RESULT)[: MiB // 2] + b"]" * (MiB // 2 - len(RESULT)),
    "deep objects": fill(b'{"a":', RESULT),
    "a megabyte line of nsjail noise": fill(b"nsjail: "),
    "megabyte lines of nsjail noise": fill(b"nsjail: " * 1000 + b"\n"),
    "nsjail noise then a complaint, no newline": fill(b"nsjail: ", tail=LOADER[:-1]),
    "a megabyte of loader complaints": fill(LOADER),
    "an unterminated progress note": fill(b'\\"', NOTE + b'"'),
    "an unterminated progress note line": fill(b"[", NOTE),
    "a progress prefix without end": fill(b'{"progress":'),
    "many short notes": fill(b'{"progress": {}}\n'),
    "many short lines": fill(b"x\n"),
    "many empty lines": fill(b"\n"),
    "NUL bytes": fill(b"\x00"),
    "escaped NULs in a string": fill(b"\\u0000", RESULT + b'"', b'"}'),
    "lone surrogates in a string": fill(b"\\ud800", RESULT + b'"', b'"}'),
    "invalid UTF-8": fill(b"\xff\xc3"),
    "a huge integer": fill(b"7", RESULT, b"}"),
    "many long integers": fill(b"7" * 4000 + b",", RESULT + b"[", b"1]}"),
    "a long fraction": fill(b"0", RESULT + b"1.", b"}"),
    "nsjail exit lines without end": fill(b"pid=1 ("),
    "an nsjail exit line with a huge status": fill(b"9", b"pid=1 (x) exited with status: "),
    "an nsjail signal line with a huge number": fill(
        b"9", b"pid=1 (x) terminated with signal: S ("
    ),
}


def feed_at_once(data: bytes) -> None:
    NoteWatcher(lambda note: None).feed(data)


def feed_in_pieces(data: bytes) -> None:
    watcher, so_far = NoteWatcher(lambda note: None), bytearray()
    for start in range(0, len(data), PIECE):
        so_far += data[start : start + PIECE]
        watcher.feed(so_far)


def frame_header_from_the_bytes(data: bytes) -> None:
    take_frame(bytearray(data))


def whole_frame(data: bytes) -> None:
    take_frame(bytearray(FRAME_LENGTH.pack(MAX_FRAME_BYTES) + data[:MAX_FRAME_BYTES]))


def nsjail_log(data: bytes) -> None:
    JailExit.from_log(data.decode("utf-8", errors="replace"))


def jail_run(**channels: bytes) -> JailRun:
    run = JailRun(returncode=0, **{name: Capture(2 * MiB) for name in CHANNELS})
    for name, data in channels.items():
        getattr(run, name).add(data)
    return run


CHANNELS = ("stdout", "stderr", "result", "log")


def classified(channel: str, warm: bool) -> Callable[[bytes], object]:
    exited = JailExit(launched=True, exit_code=0, signal=None, time_limit=False)

    def parse(data: bytes) -> object:
        run = jail_run(**{channel: data})
        return classify(
            run, Limits(), oom=False, peak_memory_bytes=None, jail_exit=exited if warm else None
        )

    return parse


PARSERS: dict[str, Callable[[bytes], object]] = {
    "loads": loads,
    "parse_result": parse_result,
    "split_channel": split_channel,
    "the note watcher, fed at once": feed_at_once,
    f"the note watcher, fed {PIECE} bytes at a time": feed_in_pieces,
    "take_frame on a header from the bytes": frame_header_from_the_bytes,
    "take_frame on a whole frame": whole_frame,
    "nsjail's log": nsjail_log,
    **{f"classify, {name} (fresh)": classified(name, warm=False) for name in CHANNELS},
    "classify, result (warm)": classified("result", warm=True),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("parser", PARSERS)
def test_it_parses_a_mebibyte_of_each_hostile_shape_in_under_a_second(parser, shape):
    data = SHAPES[shape]
    started = time.perf_counter()
    with contextlib.suppress(ValueError):  # ProtocolError is one: refusing is fine, not slowly
        PARSERS[parser](data)
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS, f"{parser} took {elapsed:.2f} s on {shape}"


def test_the_shapes_are_a_mebibyte_each():
    assert all(MiB - 5000 < len(data) <= MiB for data in SHAPES.values())
