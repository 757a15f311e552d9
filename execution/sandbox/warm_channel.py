"""The control channel between the host and a warm jail's zygote (see runtime/zygote.py).

Frames to the zygote are fixed binary headers; frames from it are length-prefixed JSON,
which the host reads like anything else from a jail: size-capped, depth-capped, checked.
"""

import struct

from execution.sandbox import protocol
from execution.sandbox.outcome import JailExit

REQUEST = struct.Struct(">QIdd")  # after b"R", b"K" or b"N": id, job length, CPU s, wall s
CANCEL = struct.Struct(">Q")  # after b"C" (cancel) or b"E" (end a kept child): an id
FRAME_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 4096  # a status frame is about 150 bytes
STATUS_KEYS = {
    "id", "exit_code", "signal", "timed_out", "cancelled", "retire", "cpu_seconds", "maxrss_bytes",
    "kept",
}  # fmt: skip


MAX_EXIT_CODE = 255
MAX_SIGNAL = 127
MAX_CPU_SECONDS = 10**7  # far above any step's limit, and exact as a float
MAX_RSS_BYTES = 2**50


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def request_header(
    activation_id: int, job_length: int, cpu: float, wall: float, kind: bytes = b"R"
) -> bytes:
    """A request's header: b"R" one step, b"K" one that may keep its child, b"N" the next
    step of a kept child (the job is then its {"output", "now"} document)."""
    if kind not in (b"R", b"K", b"N"):
        raise ValueError(f"not a request kind: {kind!r}")
    return kind + REQUEST.pack(activation_id, job_length, float(cpu), float(wall))


def cancel_frame(activation_id: int) -> bytes:
    return b"C" + CANCEL.pack(activation_id)


def end_frame(activation_id: int) -> bytes:
    """Kill the kept child; the zygote answers with a status of this id."""
    return b"E" + CANCEL.pack(activation_id)


def take_frame(inbox: bytearray) -> dict | None:
    """Remove and return the first whole frame in inbox; ValueError for a bad one."""
    if len(inbox) < FRAME_LENGTH.size:
        return None
    (length,) = FRAME_LENGTH.unpack_from(inbox)
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"a control frame of {length} bytes")
    if len(inbox) < FRAME_LENGTH.size + length:
        return None
    data = bytes(inbox[FRAME_LENGTH.size : FRAME_LENGTH.size + length])
    del inbox[: FRAME_LENGTH.size + length]
    frame = protocol.loads(data, max_depth=2)  # ProtocolError is a ValueError
    if not isinstance(frame, dict):
        raise ValueError("a control frame that is not an object")
    return frame


def check_status(frame: dict, activation_id: int) -> JailExit:
    """The zygote's report on one step, or ValueError if it is not one for this activation.

    A kept child (frame["kept"]) is alive and paused: its step ended as a clean exit."""
    if set(frame) != STATUS_KEYS:
        raise ValueError(f"a status frame with the keys {sorted(frame)}")
    if frame["id"] != activation_id:
        raise ValueError(f"the jail answered activation {frame['id']}, not {activation_id}")
    exit_code, sig = frame["exit_code"], frame["signal"]
    if not isinstance(frame["kept"], bool):
        raise ValueError("a status frame whose kept is not a boolean")
    if frame["kept"]:
        if exit_code is not None or sig is not None or frame["timed_out"] or frame["retire"]:
            raise ValueError("a kept child's status with an exit, a signal, a timeout or retire")
        exit_code = 0
    else:
        exited = _whole(exit_code, 0, MAX_EXIT_CODE) and sig is None
        if not (exited or (_whole(sig, 1, MAX_SIGNAL) and exit_code is None)):
            raise ValueError("a status frame without one exit code (0 to 255) or signal (1 to 127)")
    for key in ("timed_out", "cancelled", "retire"):
        if not isinstance(frame[key], bool):
            raise ValueError(f"a status frame whose {key} is not a boolean")
    for key, most in (("cpu_seconds", MAX_CPU_SECONDS), ("maxrss_bytes", MAX_RSS_BYTES)):
        value = frame[key]
        # The zygote runs tenant code at import: inf, 1e308 or 10**400 must not reach float().
        if not (_number(value) and 0 <= value <= most):
            raise ValueError(f"a status frame whose {key} is not a number from 0 to {most}")
    return JailExit(launched=True, exit_code=exit_code, signal=sig, time_limit=frame["timed_out"])
