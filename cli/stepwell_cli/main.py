"""`stepwell`: the command line. Every subcommand that talks to a server reads STEPWELL_URL
and STEPWELL_TOKEN from the environment, prints a readable answer (the API's JSON with
`--json`), and on an error prints the API's `detail` and exits 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepwell_cli import __version__, replay, show, verbs
from stepwell_cli.client import ApiError, Client
from stepwell_cli.watch import describe, follow_stream

# Exit codes beyond 0: an API or input error, a usage error (argparse's), a run that
# errored or was terminated (watch, replay); replay also exits 1 on a divergence.
FAILED, USAGE, RUN_FAILED = 1, 2, 3


def read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ApiError(0, f"cannot read {path}: {exc.strerror}") from None


def json_value(text: str) -> Any:
    """A JSON value given inline, or `@FILE` to read it from a file."""
    try:
        return json.loads(read_text(text[1:]) if text.startswith("@") else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def answer(args: argparse.Namespace, doc: Any, text: Callable[[Any], str]) -> int:
    print_json(doc) if args.json else print(text(doc))
    return 0


# The subcommands: each takes the parsed arguments, returns the exit code.


def cmd_validate(args: argparse.Namespace) -> int:
    doc = verbs.validate(client(), args.name, read_text(args.file))
    answer(args, doc, validation)
    return 0 if doc.get("ok") else FAILED


def validation(doc: dict) -> str:
    lines = ["valid" if doc.get("ok") else "not valid"]
    for kind in ("errors", "flags"):
        for item in doc.get(kind) or []:
            where = (
                f"line {item.get('line')}, column {item.get('column')}: " if "line" in item else ""
            )
            lines.append(f"  {kind[:-1]}: {where}{item.get('message', item)}")
    return "\n".join(lines)


def cmd_deploy(args: argparse.Namespace) -> int:
    doc = verbs.deploy(client(), args.name, read_text(args.file), args.description)
    version = doc.get("version") or doc.get("current_version") or {}
    what = "new version" if doc["created"] else "unchanged, version"
    return answer(
        args,
        doc,
        lambda _: f"{args.name}: {what} {version.get('sha256')} ({version.get('status')})",
    )


def cmd_start(args: argparse.Namespace) -> int:
    api = client()
    doc = verbs.start(api, args.workflow, args.payload, args.id, args.version)
    answer(args, doc, lambda d: f"{d['id']}  {d['status']}")
    return follow(api, doc["id"], args.json) if args.watch else 0


def cmd_status(args: argparse.Namespace) -> int:
    return answer(args, verbs.status(client(), args.id), show.instance)


def cmd_watch(args: argparse.Namespace) -> int:
    return follow(client(), args.id, args.json)


def follow(api: Client, instance_id: str, as_json: bool) -> int:
    def emit(message: dict) -> None:
        print(json.dumps(message) if as_json else describe(message), flush=True)

    status = follow_stream(api, instance_id, emit)
    if status == "errored" and not as_json:  # the traceback, which events do not carry
        print(show.instance(verbs.status(api, instance_id)).split("\n", 1)[-1])
    return 0 if status == "complete" else RUN_FAILED


def cmd_events_send(args: argparse.Namespace) -> int:
    doc = verbs.send_event(client(), args.id, args.type, args.payload)
    matched = doc.get("matched") if isinstance(doc, dict) else None
    note = (
        ""
        if matched is None
        else (" (a wait took it)" if matched else " (stored; no wait took it)")
    )
    return answer(args, doc, lambda d: f"{d.get('detail', 'sent')}{note}")


def cmd_events_list(args: argparse.Namespace) -> int:
    items = verbs.events(client(), args.id)
    return answer(
        args,
        items,
        lambda items: (
            "\n".join(
                f"{e.get('sent_at')}  {e.get('type')}  {show.short(e.get('payload'), 80)}  "
                f"consumed by {e.get('consumed_by')}"
                for e in items
            )
            or "(no events)"
        ),
    )


def cmd_logs(args: argparse.Namespace) -> int:
    return answer(args, verbs.status(client(), args.id), lambda d: show.logs(d, args.step))


def cmd_history(args: argparse.Namespace) -> int:
    doc = verbs.history(client(), args.id, args.run)
    if args.output:
        Path(args.output).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.output}: {len(doc.get('steps') or [])} steps, {doc.get('status')}")
    else:
        print_json(doc)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    doc = verbs.runs(client(), args.id)
    items = doc.get("items", doc) if isinstance(doc, dict) else doc
    return answer(
        args,
        doc,
        lambda _: "\n".join(
            f"run {r.get('run')}  {r.get('status')}  {r.get('started_at')}  version "
            f"{str(r.get('version'))[:12]}  from step {r.get('restarted_from_step')}"
            for r in items
        ),
    )


def cmd_restart(args: argparse.Namespace) -> int:
    doc = verbs.restart(client(), args.id, args.from_step, args.version)
    return answer(args, doc, show.instance)


def cmd_rerun(args: argparse.Namespace) -> int:
    doc = verbs.rerun(client(), args.id, args.new_id, args.payload, args.version)
    return answer(args, doc, lambda d: f"{d['id']}  {d['status']}")


def cmd_secrets_set(args: argparse.Namespace) -> int:
    # Read from stdin unless given: a value on the command line shows in `ps` and history.
    value = args.value if args.value is not None else sys.stdin.read().rstrip("\r\n")
    doc = verbs.set_secret(client(), args.name, value)
    return answer(args, doc, lambda d: f"secret {d.get('name', args.name)} set")


def cmd_secrets_list(args: argparse.Namespace) -> int:
    items = verbs.secrets(client())
    return answer(
        args,
        items,
        lambda items: (
            "\n".join(f"{s.get('name')}  updated {s.get('updated_at')}" for s in items)
            or "(no secrets)"
        ),
    )


def cmd_secrets_delete(args: argparse.Namespace) -> int:
    verbs.delete_secret(client(), args.name)
    return answer(args, {"deleted": args.name}, lambda _: f"secret {args.name} deleted")


def cmd_schedules_list(args: argparse.Namespace) -> int:
    items = verbs.schedules(client())
    return answer(
        args, items, lambda items: "\n".join(schedule_line(s) for s in items) or "(no schedules)"
    )


def schedule_line(s: dict) -> str:
    when = f"cron {s['cron']!r}" if s.get("cron") else f"every {s.get('every')} s"
    paused = "  paused" if s.get("paused") else ""
    return f"{s.get('name')}  {s.get('workflow')}  {when}  next {s.get('next_fire_at')}{paused}"


def cmd_schedules_set(args: argparse.Namespace) -> int:
    fields = {
        "cron": args.cron,
        "every": args.every,
        "timezone": args.timezone,
        "payload": args.payload,
        "overlap": args.overlap,
        "paused": args.paused,
    }
    doc = verbs.set_schedule(client(), args.workflow, args.name, **fields)
    return answer(args, doc, schedule_line)


def cmd_schedules_delete(args: argparse.Namespace) -> int:
    verbs.delete_schedule(client(), args.workflow, args.name)
    return answer(args, {"deleted": args.name}, lambda _: f"schedule {args.name} deleted")


def cmd_schedules_fires(args: argparse.Namespace) -> int:
    items = verbs.schedule_fires(client(), args.name)
    return answer(
        args,
        items,
        lambda items: (
            "\n".join(
                f"{f.get('fire_at')}  {f.get('instance') or 'skipped: ' + str(f.get('skipped'))}"
                for f in items
            )
            or "(no fires)"
        ),
    )


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        history = replay.load_history(json.loads(read_text(args.history)))
    except ValueError as exc:
        print(f"error: {args.history}: {exc}", file=sys.stderr)
        return USAGE
    if args.code:
        code, filename = read_text(args.code), str(Path(args.code).resolve())
    else:
        code = (history.get("version") or {}).get("code")
        if not isinstance(code, str):
            print("error: the history holds no code; give --code FILE", file=sys.stderr)
            return USAGE
        filename = f"<{history.get('workflow')} {str(history['version'].get('sha256'))[:12]}>"
    out = sys.stdout
    events: list[dict] = []

    def emit(event: dict) -> None:
        events.append(event)
        if not args.json:
            print(show.replay_event(event), file=out, flush=True)

    if not args.json:
        print(
            f"replaying {history['instance']} ({history.get('workflow')}, run "
            f"{history.get('run')}) with {args.code or 'its recorded code'}"
        )
    try:
        local = replay.Replay(
            history, code, filename, from_step=args.from_step, pdb_step=args.pdb, emit=emit
        )
    except Exception as exc:  # the module's own top level failed: nothing to replay
        print(
            f"error: the workflow module does not load: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return USAGE
    code_ = local.run()
    if args.json:
        print_json({"exit_code": code_, "events": events})
    return code_


def cmd_mcp(args: argparse.Namespace) -> int:
    try:  # here, not at the top: the mcp package is an extra
        from stepwell_cli import mcp_server
    except ImportError as exc:
        print(f"error: {exc}; install the extra: pip install 'stepwell[mcp]'", file=sys.stderr)
        return FAILED
    mcp_server.serve()
    return 0


def client() -> Client:
    return Client.from_env()


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON"
    )
    top = argparse.ArgumentParser(
        prog="stepwell",
        description="Deploy, run, watch and debug Stepwell workflows "
        "(STEPWELL_URL and STEPWELL_TOKEN from the environment).",
    )
    top.add_argument("--json", action="store_true", help="print the API's JSON")
    top.add_argument("--version", action="version", version=f"stepwell {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    payload = {"type": json_value, "metavar": "JSON", "help": "a JSON value, or @FILE"}

    p = add("validate", cmd_validate, "check workflow code without saving it")
    p.add_argument("name")
    p.add_argument("file", help="the workflow's Python file ('-' for stdin)")
    p = add("deploy", cmd_deploy, "upload workflow code (a new version if it changed)")
    p.add_argument("name")
    p.add_argument("file", help="the workflow's Python file ('-' for stdin)")
    p.add_argument("--description")
    p = add("start", cmd_start, "start an instance of a workflow")
    p.add_argument("workflow")
    p.add_argument("--payload", **payload)
    p.add_argument("--id", help="the instance id (starting it again is a no-op)")
    p.add_argument("--version", metavar="SHA256", help="an approved version to run")
    p.add_argument("--watch", action="store_true", help="then follow it to its end")
    add("status", cmd_status, "an instance and its steps").add_argument("id")
    add(
        "watch", cmd_watch, "follow an instance live until it ends (exit 3 unless it completes)"
    ).add_argument("id")
    events = add("events", None, "events sent to an instance").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = add("send", cmd_events_send, "send an event to an instance", events)
    p.add_argument("id")
    p.add_argument("type")
    p.add_argument("--payload", **payload)
    add("list", cmd_events_list, "the events sent to an instance", events).add_argument("id")
    p = add("logs", cmd_logs, "what an instance's steps printed, attempt by attempt")
    p.add_argument("id")
    p.add_argument("--step", type=int, metavar="INDEX", help="only this step")
    p = add("history", cmd_history, "download a run's history (for `stepwell replay`)")
    p.add_argument("id")
    p.add_argument("--run", type=int, help="an earlier run (see `stepwell runs`)")
    p.add_argument("-o", "--output", metavar="FILE", help="write it here, not to stdout")
    add("runs", cmd_runs, "an instance's runs, newest first").add_argument("id")
    p = add("restart", cmd_restart, "a new run of an instance, from the start or a step")
    p.add_argument("id")
    p.add_argument("--from-step", type=int, metavar="N", help="keep the results before step N")
    p.add_argument("--version", metavar="SHA256", help="run the new run on this version")
    p = add("rerun", cmd_rerun, "a new instance with the same (or a new) payload")
    p.add_argument("id")
    p.add_argument("--id", dest="new_id", metavar="NEW_ID", help="the new instance's id")
    p.add_argument("--payload", **payload)
    p.add_argument("--version", metavar="SHA256")
    secrets = add("secrets", None, "the tenant's secrets").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = add("set", cmd_secrets_set, "set a secret (its value from stdin unless --value)", secrets)
    p.add_argument("name")
    p.add_argument("--value", help="the value (else read from stdin)")
    add("list", cmd_secrets_list, "the secrets' names", secrets)
    add("delete", cmd_secrets_delete, "delete a secret", secrets).add_argument("name")
    schedules = add("schedules", None, "start workflows on a schedule").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add("list", cmd_schedules_list, "the tenant's schedules", schedules)
    p = add("set", cmd_schedules_set, "create or replace a schedule", schedules)
    p.add_argument("workflow")
    p.add_argument("name")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5 fields, in --timezone")
    when.add_argument("--every", help="seconds, or a duration such as '10 minutes'")
    p.add_argument("--timezone")
    p.add_argument("--payload", **payload)
    p.add_argument("--overlap", choices=("skip", "allow"))
    p.add_argument("--paused", action=argparse.BooleanOptionalAction, default=None)
    p = add("delete", cmd_schedules_delete, "delete a schedule", schedules)
    p.add_argument("workflow")
    p.add_argument("name")
    add("fires", cmd_schedules_fires, "a schedule's fires, newest first", schedules).add_argument(
        "name"
    )
    p = add("replay", cmd_replay, "run a downloaded history locally against its record")
    p.add_argument("history", help="a file from `stepwell history ID -o FILE`")
    p.add_argument("--code", metavar="FILE", help="replay this code instead of the recorded")
    p.add_argument("--pdb", metavar="STEP_NAME", help="stop in pdb where run() calls this step")
    p.add_argument(
        "--from-step",
        type=int,
        metavar="N",
        help="replay steps before N, run the rest here (as restart --from-step)",
    )
    add("mcp", cmd_mcp, "serve these verbs as MCP tools over stdio (extra: stepwell[mcp])")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130
