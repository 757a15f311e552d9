"""What the command prints for a person (with `--json`, the API's JSON is printed instead)."""

from __future__ import annotations

import json
from typing import Any

MAX_VALUE_CHARS = 200


def short(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def step_line(step: dict[str, Any]) -> str:
    attempts = step.get("attempts") or 0
    line = f"  #{step.get('index')} {step.get('kind')} {step.get('name')!r}: {step.get('status')}"
    if attempts > 1:
        line += f" after {attempts} attempts"
    if step.get("error"):
        line += f" -- {error_text(step['error'])}"
    elif step.get("status") == "complete" and step.get("kind") != "sleep":
        line += f" = {short(step.get('output'), 80)}"
    if step.get("waiting_for"):
        line += f" (waiting for {short(step['waiting_for'], 80)})"
    return line


def instance(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['id']}  {doc.get('workflow')}  {doc.get('status')}  "
        f"version {str(doc.get('version') or '')[:12]}"
    ]
    lines += [step_line(step) for step in doc.get("steps") or []]
    if doc.get("error"):
        lines.append(f"error: {error_text(doc['error'])}")
        if doc["error"].get("traceback"):
            lines.append(doc["error"]["traceback"].rstrip())
    elif doc.get("status") == "complete":
        lines.append(f"output: {short(doc.get('output'))}")
    return "\n".join(lines)


def logs(doc: dict[str, Any], only: int | None = None) -> str:
    """Every step's logs, attempt by attempt where the API gives attempts."""
    out = []
    for step in doc.get("steps") or []:
        if only is not None and step.get("index") != only:
            continue
        attempts = step.get("attempts_detail") or [
            {
                "attempt": step.get("attempts"),
                "status": step.get("status"),
                "logs": step.get("logs"),
                "error": step.get("error"),
            }
        ]
        for attempt in attempts:
            if not attempt.get("logs") and not attempt.get("error"):
                continue
            out.append(
                f"== #{step.get('index')} {step.get('name')!r} attempt {attempt.get('attempt')}"
                f" ({attempt.get('status')})"
            )
            out += [f"  {line}" for line in (attempt.get("logs") or "").rstrip().splitlines()]
            if attempt.get("error"):
                out.append(f"  ! {error_text(attempt['error'])}")
                traceback = attempt["error"].get("traceback")
                out += [f"  ! {line}" for line in (traceback or "").rstrip().splitlines()]
    return "\n".join(out) if out else "(no logs)"


def replay_event(event: dict[str, Any]) -> str:
    """One line (or a few) per thing a local replay reports."""
    kind = event["event"]
    kind_of_step = event.get("kind") or event.get("step_kind")
    label = f"#{event.get('index')} {kind_of_step} {event.get('name')!r}"
    if kind == "replayed":
        if event["status"] == "complete":
            result = "" if event["kind"] == "sleep" else f" = {short(event['output'], 120)}"
            return f"  {label}: replayed{result}"
        return f"  {label}: replayed, {event['status']} -- {error_text(event['error'])}"
    if kind == "ran":
        head = f"  {label}: ran here, {event['status']}"
        if event.get("error"):
            head += f" -- {error_text(event['error'])} (no retries in a local replay)"
        else:
            head += f" = {short(event.get('output'), 120)}"
        logs = [f"      | {line}" for line in (event.get("logs") or "").rstrip().splitlines()]
        return "\n".join([head, *logs])
    if kind == "sleep":
        return f"  #{event['index']} sleep {event['name']!r}: until {event['until']}, skipped here"
    if kind == "pdb":
        return f"  #{event['index']} {event['name']!r}: stopping in pdb"
    if kind == "suspended":
        return (
            f"  #{event.get('index')} {event.get('step_kind')} {event.get('name')!r}: the run "
            "waits here; a local replay sends no events and starts no workflows, so it stops"
        )
    if kind == "divergence":
        return divergence(event)
    if kind in ("complete", "errored"):
        return ending(event)
    return f"  {event}"


def divergence(event: dict[str, Any]) -> str:
    line = f" (line {event['line']})" if event.get("line") else ""
    return "\n".join(
        [
            f"DIVERGED at step {event['index']}{line}:",
            f"  recorded: {short(event.get('recorded'))}",
            f"  now:      {short(event.get('new'))}",
            f"  {event['error']['message']}",
        ]
    )


def ending(event: dict[str, Any]) -> str:
    if event["event"] == "complete":
        lines = [f"run complete: output {short(event.get('output'))}"]
    else:
        error = event.get("error") or {}
        lines = [f"run errored: {error_text(error)}"]
        if error.get("traceback"):
            lines.append(error["traceback"].rstrip())
    recorded = event.get("recorded")
    if recorded is not None:
        error = event.get("error")
        mine = {
            "status": event["event"],
            "output": event.get("output") if event["event"] == "complete" else None,
            "error": error and {"type": error.get("type"), "message": error.get("message")},
        }
        same = mine == recorded
        lines.append("the same as recorded" if same else f"recorded: {short(recorded)}")
    return "\n".join(lines)
