"""What an agent does with Stepwell, through the public HTTP API only.

It writes a workflow file, uploads it (after asking the API to validate it),
starts an instance, sends it the event it waits for, and prints each step as it
completes. Standard library only:

    STEPWELL_TOKEN=sw_... python examples/agent.py --url http://127.0.0.1:8000

Make a token with `python manage.py create_tenant acme --token agent`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

WORKFLOW = """\
def run(event, step):
    order = event.payload
    total = step.do("price", lambda: sum(i["qty"] * i["price"] for i in order["items"]))
    approval = step.wait_for_event("approval", "approved", timeout=3600)
    receipt = step.do("receipt", lambda: f"order {order['id']}: {total} approved by {approval}")
    return {"total": total, "receipt": receipt}
"""
FINISHED = {"complete", "errored", "terminated"}
STEP_DONE = {"complete", "errored", "timed_out"}


class ApiError(Exception):
    def __init__(self, status: int, detail):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class Stepwell:
    """A thin client of /api/v1; every error is an ApiError with the API's `detail`."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/") + "/api/v1"
        self.token = token

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method.upper())
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, json.loads(exc.read() or b"{}").get("detail")) from None


def write_workflow(folder: Path) -> Path:
    path = folder / "checkout.py"
    path.write_text(WORKFLOW)
    return path


def upload(api, name: str, path: Path) -> dict:
    code = path.read_text()
    report = api.call("post", f"/workflows/{name}/validate", {"code": code})
    for problem in report["errors"] + report["flags"]:
        print(f"{path}:{problem['line']}:{problem['column']}: {problem['message']}")
    if not report["ok"]:
        raise SystemExit("the workflow is not valid; fix the errors above")
    workflow = api.call("put", f"/workflows/{name}", {"code": code, "description": "checkout"})
    version = workflow["version"]
    print(f"uploaded {name} @ {version['sha256'][:12]} ({version['status']})")
    return workflow


def follow(api, instance_id: str, event: dict, *, poll: float = 0.5, timeout: float = 120):
    """Print each step as it completes; send `event` when the instance waits for it."""
    printed, sent, deadline = set(), False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance = api.call("get", f"/instances/{instance_id}")
        for step in instance["steps"]:
            if (
                step["status"] in ("complete", "errored", "timed_out")
                and step["index"] not in printed
            ):
                printed.add(step["index"])
                print(f"step {step['index']} {step['name']!r} {step['status']}: {step['output']!r}")
        if instance["status"] in FINISHED:
            return instance
        if instance["status"] == "waiting" and not sent:
            api.call("post", f"/instances/{instance_id}/events", event)
            print(f"sent event {event['type']!r}")
            sent = True
        time.sleep(poll)
    raise TimeoutError(f"instance {instance_id} did not finish in {timeout} s")


def main(api, folder: Path, poll: float = 0.5) -> dict:
    upload(api, "checkout", write_workflow(folder))
    order = {"id": "A-17", "items": [{"qty": 2, "price": 5}, {"qty": 1, "price": 7}]}
    key = f"order-A-17-{uuid.uuid4().hex[:8]}"
    instance = api.call("post", "/workflows/checkout/instances", {"id": key, "payload": order})
    print(f"started {instance['id']} ({instance['status']})")
    done = follow(api, instance["id"], {"type": "approved", "payload": "alice"}, poll=poll)
    print(f"{done['status']}: {json.dumps(done['output'] or done['error'])}")
    return done


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("STEPWELL_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args()
    token = os.environ.get("STEPWELL_TOKEN") or sys.exit("set STEPWELL_TOKEN to an API token")
    with tempfile.TemporaryDirectory() as folder:
        result = main(Stepwell(args.url, token), Path(folder))
    sys.exit(0 if result["status"] == "complete" else 1)
