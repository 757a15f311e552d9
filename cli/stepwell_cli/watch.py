"""`stepwell watch`: follow one instance's progress stream to its end, resuming with
`?after=N` after a dropped connection so that no event is lost or shown twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from stepwell_cli import websocket
from stepwell_cli.client import ApiError, Client, quote

TERMINAL = ("complete", "errored", "terminated")
# Close codes the server refuses with (execution/consumers.py): not worth a retry.
REFUSALS = {4401: "the token is missing or not valid", 4404: "no such instance"}
RECONNECTS = 10  # in a row, without receiving anything in between

Connect = Callable[[str, dict[str, str]], websocket.WebSocket]


def default_connect(url: str, headers: dict[str, str]) -> websocket.WebSocket:
    # The server pings idle connections; a minute of silence means the connection is gone.
    return websocket.connect(url, headers, timeout=60)


def follow_stream(
    client: Client,
    instance_id: str,
    emit: Callable[[dict[str, Any]], None],
    connect: Connect = default_connect,
    pause: Callable[[float], None] = time.sleep,
) -> str:
    """Emit the snapshot and then every event of the instance until it ends; its status."""
    last_seq: int | None = None
    failures = 0
    while True:
        query = "" if last_seq is None else f"?after={last_seq}"
        url = client.websocket_url(f"/ws/instances/{quote(instance_id)}/{query}")
        try:
            ws = connect(url, {"Authorization": f"Bearer {client.token}"})
            with ws:
                for message in messages(ws):
                    failures = 0
                    if message.get("type") == "snapshot":
                        if last_seq is None:  # a resumed stream's snapshot repeats what we had
                            emit(message)
                            last_seq = int(message.get("seq") or 0)
                            status = message["instance"]["status"]
                            if status in TERMINAL:
                                return status
                        continue
                    if last_seq is not None and message.get("seq", 0) <= last_seq:
                        continue
                    emit(message)
                    last_seq = message.get("seq", last_seq)
                    if (
                        message.get("type") == "instance.status"
                        and message.get("status") in TERMINAL
                    ):
                        return message["status"]
        except websocket.Closed as closed:
            if closed.code in REFUSALS:
                raise ApiError(closed.code, REFUSALS[closed.code]) from None
            reason = f"closed by the server ({closed.code})"
        except websocket.WebSocketError as exc:
            reason = str(exc)
        failures += 1
        if failures > RECONNECTS:
            raise ApiError(0, f"the stream of {instance_id} keeps failing: {reason}")
        emit({"type": "reconnect", "after": last_seq, "reason": reason})
        pause(min(0.5 * 2 ** (failures - 1), 10))


def messages(ws: websocket.WebSocket):
    while True:
        text = ws.recv()
        try:
            message = json.loads(text)
        except ValueError:
            continue  # not the API's; the stream goes on
        if isinstance(message, dict):
            yield message


def describe(message: dict[str, Any]) -> str:
    """One line for a human per stream message."""
    kind = message.get("type", "")
    seq = message.get("seq")
    prefix = f"[{seq}] " if seq is not None else ""
    if kind == "snapshot":
        # An instance that ended before the watch began ends the stream here: its error
        # must show now, as it would on the status event the watch did not see.
        instance = message["instance"]
        steps = instance.get("steps") or []
        return (
            f"{prefix}{instance['id']} ({instance['workflow']}): {instance['status']}, "
            f"{len(steps)} step{'s' * (len(steps) != 1)} so far{error_suffix(instance)}"
        )
    if kind == "reconnect":
        return f"-- connection lost ({message['reason']}); resuming after seq {message['after']}"
    if kind == "instance.status":
        return f"{prefix}instance {message.get('status')}{error_suffix(message)}"
    step = message.get("step") or {}
    label = f"#{step.get('index')} {step.get('name')!r} ({step.get('kind')})"
    if kind == "step.log":
        return f"{prefix}{label} | {message.get('line', '').rstrip()}"
    attempts = step.get("attempts")
    extra = f", attempt {attempts}" if attempts else ""
    # The event's type says what happened; a failure says whether it will be retried.
    status = f": {step.get('status')}" if kind == "step.failed" else ""
    return f"{prefix}{kind} {label}{status}{extra}"


def error_suffix(holder: dict[str, Any]) -> str:
    error = holder.get("error")
    return f": {error.get('type')}: {error.get('message')}" if isinstance(error, dict) else ""
