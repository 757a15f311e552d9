"""The console in Debian's Chromium, against the Procfile's uvicorn, a Celery worker, the clock,
PostgreSQL and Redis: from a syntax error to a finished run, watched live."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from execution.workflows import send_event, start_instance
from tests.browser.wsclient import Closed, WebSocket
from tests.factories import make_token, upload

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LIVE = 30_000  # ms: a step through a real jail, a sleep and the clock

BROKEN = """\
def run(event, step):
    greeting = step.do("greet", lambda: "hello, " + event.payload["name"])
    step.sleep("nap", "1 second"
    approval = step.wait_for_event("approval", event_type="approved", timeout="1 hour")
    return step.do("finish", lambda: {"greeting": greeting, "by": approval["by"]})
"""
FIXED = BROKEN.replace('"1 second"\n', '"1 second")\n')


def sign_in(browser, stack, username: str):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(stack.web.url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}-123!")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    return page


def type_code(page, code: str) -> None:
    page.click(".CodeMirror")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(code)


def step_bar(page, index: int):
    return page.locator(f'#timeline .tl-row[data-step="{index}"]')


def test_alice_writes_runs_and_watches_a_workflow_and_bob_cannot_see_it(
    acme, globex, stack, browser
):
    page = sign_in(browser, stack, "alice")
    page.goto(stack.web.url + "/workflows/_new/")
    page.fill("#id_name", "greet")
    type_code(page, BROKEN)
    # Marked at its line as it is typed, before any save.
    error_line = page.locator(".CodeMirror .cm-error-line")
    expect(error_line).to_have_count(1)
    expect(page.locator(".line-note.error")).to_contain_text("line 3")
    lines = page.locator(".CodeMirror-code > div")
    expect(lines.nth(2)).to_have_class(re.compile("cm-error-line"))

    with page.expect_navigation() as saved:
        page.click("button:has-text('Save version')")
    assert saved.value.status == 422  # refused: nothing was saved
    expect(page.locator(".problem[data-line='3']")).to_be_visible()
    expect(page.locator(".CodeMirror-code > div").nth(2)).to_have_class(re.compile("cm-error-line"))

    type_code(page, FIXED)
    expect(page.locator("#check-state")).to_have_text("✓ the code checks out")
    expect(page.locator(".cm-error-line")).to_have_count(0)
    page.click("button:has-text('Save version')")
    expect(page.locator(".flash.success")).to_contain_text("Saved version")

    # A second tab on the instances list, filtered to complete ones: it fills in live.
    listing = page.context.new_page()
    listing.goto(stack.web.url + "/instances/?status=complete")
    expect(listing.locator("#live")).to_have_text("live")
    expect(listing.locator(".empty-row")).to_be_visible()

    page.click("a:has-text('Start instance')")
    page.click(".CodeMirror")
    page.keyboard.press("Control+A")
    page.keyboard.insert_text('{"name": "ada"}')
    expect(page.locator("#json-state")).to_contain_text("valid JSON object")
    page.fill("#id_key", "ada-1")
    page.click("button:has-text('Start instance')")
    page.wait_for_url("**/instances/ada-1/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#live")).to_have_text("live")

    # Live, without reloading: the step runs, the sleep starts and ends, the wait begins.
    expect(step_bar(page, 0)).to_have_attribute("data-status", "complete", timeout=LIVE)
    expect(step_bar(page, 1)).to_have_attribute("data-status", "complete", timeout=LIVE)
    expect(step_bar(page, 2)).to_have_attribute("data-status", "waiting", timeout=LIVE)
    expect(page.locator("#status")).to_have_text("waiting")

    # The network drops; the event is sent meanwhile; the page catches up on reconnect.
    page.evaluate("window.Stepwell.live.drop()")
    page.fill("#id_type", "approved")
    page.fill("#event-form #id_payload", '{"by": "alice"}')
    page.click("button:has-text('Send event')")
    expect(page.locator("#flash")).to_contain_text("Sent event 'approved'")
    expect(page.locator("#status")).to_have_text("complete", timeout=LIVE)
    expect(step_bar(page, 3)).to_have_attribute("data-status", "complete")
    expect(page.locator("#output")).to_contain_text('"by": "alice"')
    assert page.evaluate("window.__sameDocument") is True
    assert page.evaluate("window.Stepwell.live.connects") >= 2

    expect(listing.locator('tr[data-instance="ada-1"] .badge')).to_have_text("complete")
    listing.close()
    a_failing_step_shows_its_error_traceback_and_logs_for_every_attempt(page, stack, acme)

    # Screenshots only on request (README's docs/instance-page.png came from here): a
    # test run leaves the checkout as it found it.
    if os.environ.get("STEPWELL_SCREENSHOT_DIR"):
        shots = Path(os.environ["STEPWELL_SCREENSHOT_DIR"])
        page.screenshot(path=str(shots / "instance-page.png"), full_page=True)
        tour(page, stack, shots)

    bob = sign_in(browser, stack, "bob")
    response = bob.goto(stack.web.url + "/instances/ada-1/")
    assert response.status == 404
    assert "hello, ada" not in bob.content()
    assert "instance-data" not in bob.content()


RETRIED = """\
def run(event, step):
    def charge():
        print("charging the card")
        return 1 / 0

    return step.do("charge", charge, retries={"limit": 1, "delay": 0})
"""


def a_failing_step_shows_its_error_traceback_and_logs_for_every_attempt(page, stack, acme):
    workflow = upload(acme, "retried", RETRIED).workflow
    start_instance(workflow, key="retried-1")
    page.goto(stack.web.url + "/instances/retried-1/")
    expect(page.locator("#status")).to_have_text("errored", timeout=LIVE)
    step = page.locator('#steps .step[data-step="0"]')
    # The step's last attempt: the error, the tenant code's traceback, what it printed.
    expect(step.locator(":scope > pre.error-box")).to_contain_text("ZeroDivisionError")
    expect(step.locator(":scope > pre.error-box")).to_contain_text("in charge")
    expect(step.locator(":scope > pre.logs")).to_contain_text("charging the card")
    # The attempt before it, with its own.
    first = step.locator('.attempt[data-attempt="1"]')
    expect(first).to_contain_text("Attempt 1 · failed")
    expect(first.locator("pre.error-box")).to_contain_text("in charge")
    expect(first.locator("pre.logs")).to_contain_text("charging the card")


FAILING = """\
def run(event, step):
    step.do("reserve", lambda: {"reserved": 2})

    def charge():
        print("charging the card")
        return 1 / 0

    return step.do("charge", charge, retries={"limit": 2, "delay": "1 second"})
"""


def tour(page, stack, into: Path) -> None:
    """Screenshots of the other pages, for a person to look at (not for the README)."""
    into.mkdir(parents=True, exist_ok=True)
    page.goto(stack.web.url + "/workflows/greet/")
    type_code(
        page, FIXED.replace("approval[", "approval[[").replace("import", "") + "import socket\n"
    )
    expect(page.locator(".cm-error-line")).to_have_count(1)
    page.goto(stack.web.url + "/workflows/_new/")
    page.fill("#id_name", "charge")
    type_code(page, FAILING)
    page.click("button:has-text('Save version')")
    page.click("a:has-text('Start instance')")
    page.click("button:has-text('Start instance')")
    expect(page.locator("#status")).to_have_text("errored", timeout=LIVE)
    page.screenshot(path=str(into / "errored.png"), full_page=True)
    for path, name in [
        ("", "editor"),
        ("/workflows/greet/versions/", "versions"),
        ("/", "overview"),
        ("/workflows/", "workflows"),
        ("/instances/", "instances"),
        ("/tokens/", "tokens"),
        ("/workflows/greet/start/", "start"),
    ]:
        if path:
            page.goto(stack.web.url + path)
        page.screenshot(path=str(into / f"{name}.png"), full_page=True)


def test_a_program_follows_an_instance_over_a_real_websocket(stack, acme, globex):
    workflow = upload(
        acme,
        "count",
        """
        def run(event, step):
            step.wait_for_event("go", "go")
            a = step.do("one", lambda: 1)
            b = step.do("two", lambda: a + 1)
            return {"sum": a + b}
        """,
    ).workflow
    instance, _ = start_instance(workflow, key="count-1")
    ws_url = stack.web.url.replace("http://", "ws://")
    origin = {"Origin": stack.web.url}
    headers = {"Authorization": f"Bearer {make_token(acme)}", **origin}

    client = WebSocket(f"{ws_url}/ws/instances/{instance.key}/", headers)
    snapshot = client.recv()
    assert snapshot["type"] == "snapshot"
    assert snapshot["instance"]["id"] == "count-1"
    seen = [snapshot["seq"]]
    # The steps run only now, after the snapshot: this client must see them happen.
    send_event(instance, "go")
    events = []
    while not events or events[-1].get("status") != "complete":
        event = client.recv()
        events.append(event)
        seen.append(event["seq"])
    client.close()
    assert seen == sorted(set(seen))
    types = [e["type"] for e in events]
    assert types.count("step.completed") == 2

    # Reconnecting after the first event replays the rest from the database.
    replay = WebSocket(f"{ws_url}/ws/instances/{instance.key}/?after=1", headers)
    again = replay.recv()
    rest = [replay.recv() for _ in range(again["seq"] - 1)]
    replay.close()
    assert [e["seq"] for e in rest] == list(range(2, again["seq"] + 1))
    assert rest[-1]["status"] == "complete"

    bob = WebSocket(
        f"{ws_url}/ws/instances/{instance.key}/",
        {"Authorization": f"Bearer {make_token(globex)}", **origin},
    )
    with pytest.raises(Closed) as refused:
        bob.recv()
    assert refused.value.code == 4404
