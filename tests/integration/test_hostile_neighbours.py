"""Hostile tenants on the real stack (issue 13, point 2; SANDBOX.md cases 21 to 25).

While tenant A runs an attack, tenant B's one-step workflow completes as usual, and A's
instances end where the issue says they should: in a clear error, not retried forever.
Real Celery workers, nsjail, PostgreSQL and Redis; one stack serves every case, and a
case that leaves its workers stuck or busy gets them replaced, so the next case starts
clean. The 60 s bounds are completion checks, not timing goals.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.db import connection

from execution import workflows
from execution.models import Instance, Step
from tests.factories import make_tenant, upload
from tests.integration.stack import Stack, current_database_url, serving, wait_until
from tests.integration.test_durability import step_processes

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

COMPLETION_BOUND_SECONDS = 60
ATTACK_STEP_TIMEOUT_SECONDS = 5  # a hanging attack ends here, so no case waits long on one
IDLE_BOUND_SECONDS = 20

NEIGHBOUR = """
def run(event, step):
    return step.do("hello", lambda: "hello")
"""

# (a) About 1 MiB (under the output and result caps, so every byte reaches a parser) of
# the slow shapes: nsjail's loader noise on one line, a progress note whose string never
# ends, and a string of escaped quotes that never ends; to every fd from 1 to 10 (stdout,
# stderr, the result channel), noise first where it reaches the stderr filter, the note
# first where it reaches the progress watcher.
JUNK = r"""
import os
import time

PART = (1024 * 1024 - 16 * 1024) // 3
NOISE = b"nsjail: " * (PART // 8) + b"\n"
NOTE = b'{"progress": "' + b'\\"' * (PART // 2) + b"\n"
QUOTES = b'"' + b'\\"' * (PART // 2)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def spew(then):
    for fd in range(1, 11):
        data = NOISE + NOTE + QUOTES if fd in (1, 2) else NOTE + NOISE + QUOTES
        try:
            write_all(fd, data)
        except OSError:
            pass
    if then == "hang":
        time.sleep(3600)
    os._exit(0)


def run(event, step):
    return step.do("junk", lambda: spew(event.payload["then"]), retries={"limit": 0})
"""

# (b) Output without end, inside a step (where the runtime captures it).
ENDLESS_STDOUT = """
def spam():
    while True:
        print("all work and no play makes jack a dull boy " * 4)


def run(event, step):
    return step.do("spam", spam, retries={"limit": 0})
"""

# (c) At import (in a warm jail: inside the zygote) fork a busy child, and disarm the
# zygote's cleanup. Each step then lists the jail's processes older than itself.
TAMPER = r"""
import os
import sys

SPIN = "import time\nend = time.monotonic() + 90\nwhile time.monotonic() < end: pass"
if os.fork() == 0:
    os.execv(sys.executable, [sys.executable, "-c", SPIN, "stepwell-hostile-spinner"])
zygote = sys.modules.get("zygote")
if zygote is not None:
    zygote.kill_all_others = lambda: None
    zygote.wipe_scratch = lambda: None


def started(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def older_processes():
    me = os.getpid()
    mine = started(me)
    older = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, me):
            continue
        try:
            if started(name) < mine:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    older.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return older


def run(event, step):
    return [step.do(f"look {i}", older_processes) for i in range(3)]
"""

# (d) Kill the zygote (the step's parent and the jail's pid 1) on every attempt. The
# kernel drops SIGKILL sent to a namespace's init from inside it, so the module, run at
# import inside the zygote, first gives it handlers that end it.
KILL_PARENT = """
import os
import signal
import time

for sig in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(sig, lambda *_: os._exit(9))


def kill_parent():
    for pid in (1, os.getppid()):
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    time.sleep(2)
    return "survived"


def run(event, step):
    return step.do("kill", kill_parent, retries={"limit": 0})
"""

# (e) Values PostgreSQL cannot store, and numbers past what its columns hold.
UNSTORABLE = r"""
import os

FORGED = (
    b'{"ok": true, "result": {"kind": "step", "index": 99999999999, "name": "huge",'
    b' "status": "complete", "output": 1}}'
)


def forge_huge_index():
    for fd in range(3, 11):
        try:
            os.write(fd, FORGED)
        except OSError:
            pass
    os._exit(0)


def fail():
    raise RuntimeError("again")


def run(event, step):
    kind = event.payload["kind"]
    if kind == "nul_result":
        return step.do("nul", lambda: "a\x00b", retries={"limit": 0})
    if kind == "lone_surrogate":
        return step.do("surrogate", lambda: "a\ud800b", retries={"limit": 0})
    if kind == "nul_log":
        return step.do("log", lambda: print("a\x00b") or 1, retries={"limit": 0})
    if kind == "huge_retry_limit":
        policy = {"limit": 10**12, "delay": "1 second", "backoff": "constant"}
        return step.do("flaky", fail, retries=policy)
    if kind == "huge_index":
        forge_huge_index()
"""

# (f) A network-on tenant knocking on the host's own services.
KNOCK = """
import socket


def knock(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"
    except OSError as exc:
        return type(exc).__name__


def run(event, step):
    return step.do("knock", lambda: {str(p): knock(p) for p in event.payload["ports"]})
"""


# What A's instances must come to; each returns None once the instance is there, else
# what is still wrong (polled until the bound, then the assertion's message).
Expectation = Callable[[Instance], "str | None"]


def errors_of(instance: Instance) -> str:
    steps = Step.objects.filter(instance=instance).order_by("index")
    return json.dumps([instance.error, *(s.error for s in steps)]).lower()


def errored(*words: str) -> Expectation:
    def check(instance: Instance) -> str | None:
        if instance.status != Instance.Status.ERRORED:
            return f"{instance.status}, not errored"
        text = errors_of(instance)
        missing = [w for w in words if w not in text]
        return f"errored without {missing}: {text[:400]}" if missing else None

    return check


def completes(output_check: Callable[[object], bool], what: str) -> Expectation:
    def check(instance: Instance) -> str | None:
        if instance.status != Instance.Status.COMPLETE:
            return f"{instance.status}, not complete ({errors_of(instance)[:300]})"
        return None if output_check(instance.output) else f"{what}: {instance.output!r}"

    return check


def retry_limit_clamped(instance: Instance) -> str | None:
    step = Step.objects.filter(instance=instance, name="flaky").first()
    if step is None or step.status == Step.Status.RUNNING or step.attempts < 1:
        return f"{instance.status}, its step has not failed yet ({errors_of(instance)[:300]})"
    limit = ((step.config or {}).get("retries") or {}).get("limit")
    if isinstance(limit, int) and limit <= 100:
        return None
    return f"the step's retry limit is stored as {limit!r}, not clamped to 100"


@dataclass(frozen=True)
class Attack:
    code: str
    instances: dict[str, tuple[dict, Expectation]]  # label: (payload, expectation)
    quota: dict = field(default_factory=dict)


def ports_to_knock() -> list[int]:
    return [int(connection.settings_dict["PORT"] or 5432), 6379]


# Each attack for a stack and a sandbox mode.
ATTACKS: dict[str, Callable[[Stack, str], Attack]] = {
    "junk_on_every_fd": lambda stack, mode: Attack(
        JUNK,
        {
            "then exits": ({"then": "exit"}, errored()),
            "then hangs": ({"then": "hang"}, errored()),
        },
    ),
    "endless_stdout": lambda stack, mode: Attack(
        ENDLESS_STDOUT, {"spams": ({}, errored("too large"))}
    ),
    "import_forks_and_patches_the_zygote": lambda stack, mode: Attack(
        TAMPER,
        {
            "looks around": (
                {},
                completes(lambda out: out == [[], [], []], "steps saw processes older than them"),
            )
        },
    ),
    # In a fresh jail the step is pid 1 and its handler ends it: a step error. In a
    # warm jail the zygote dies: sandbox failures, which must end in an instance error.
    "kills_its_zygote": lambda stack, mode: Attack(
        KILL_PARENT, {"kills": ({}, errored("sandbox") if mode == "warm" else errored())}
    ),
    "unstorable_values": lambda stack, mode: Attack(
        UNSTORABLE,
        {
            "NUL in a result": ({"kind": "nul_result"}, errored()),
            "lone surrogate in a result": ({"kind": "lone_surrogate"}, errored()),
            "NUL in a log": ({"kind": "nul_log"}, completes(lambda out: out == 1, "output")),
            "retry limit 10**12": ({"kind": "huge_retry_limit"}, retry_limit_clamped),
            "step index past int4": ({"kind": "huge_index"}, errored()),
        },
    ),
    "network_on_knocks_on_local_services": lambda stack, mode: Attack(
        KNOCK,
        {
            "knocks": (
                {"ports": [*ports_to_knock(), stack.redis.port]},
                completes(lambda out: "connected" not in out.values(), "reached"),
            )
        },
        quota={"network": True},
    ),
}

CASES = [
    ("junk_on_every_fd", "warm"),
    ("junk_on_every_fd", "fresh"),
    ("endless_stdout", "warm"),
    ("endless_stdout", "fresh"),
    ("import_forks_and_patches_the_zygote", "warm"),
    ("kills_its_zygote", "warm"),
    ("kills_its_zygote", "fresh"),
    ("unstorable_values", "warm"),
    ("unstorable_values", "fresh"),
    ("network_on_knocks_on_local_services", "warm"),
    ("network_on_knocks_on_local_services", "fresh"),
]


@pytest.fixture(scope="module")
def shared_stack(django_db_setup, django_db_blocker):
    """One stack for every case: starting workers costs more than most attacks."""
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip("the integration suite runs against PostgreSQL")
        url = current_database_url()
    with serving(url) as stack:
        yield stack


@dataclass
class Neighbourhood:
    stack: Stack
    clean: bool = False  # set by a case that passed: its workers are fine to keep


@pytest.fixture
def neighbourhood(shared_stack, transactional_db, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    here = Neighbourhood(shared_stack)
    yield here
    for instance in Instance.objects.exclude(status__in=Instance.TERMINAL_STATUSES):
        workflows.terminate(instance)
    if not (here.clean and workers_settle(shared_stack)):
        replace_workers(shared_stack)


def workers_settle(stack: Stack) -> bool:
    """No worker died, and no step process is left (a hung jail, a stray child)."""
    if any(worker.proc.poll() is not None for worker in stack.workers):
        return False
    try:
        wait_until(lambda: step_processes(stack) == 0, IDLE_BOUND_SECONDS, what="idle workers")
    except AssertionError:
        return False
    return True


def replace_workers(stack: Stack) -> None:
    """Workers frozen or kept busy by the last case would fail the next one for it."""
    old, stack.workers = stack.workers, []
    for worker in old:
        worker.stop()
    for _ in old:
        stack.start_worker()


@pytest.mark.parametrize(("attack", "mode"), CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_a_tenant_works_as_usual_beside_a_hostile_one(neighbourhood, attack, mode):
    stack = neighbourhood.stack
    spec = ATTACKS[attack](stack, mode)
    hostile = make_tenant(
        "hostile",
        "mallory",
        sandbox_mode=mode,
        step_timeout_seconds=ATTACK_STEP_TIMEOUT_SECONDS,
        **spec.quota,
    )
    neighbour = make_tenant("neighbour", "nina", sandbox_mode=mode)
    attack_flow = upload(hostile, attack, textwrap.dedent(spec.code)).workflow
    attacks = {
        label: (workflows.start_instance(attack_flow, payload=payload)[0], expectation)
        for label, (payload, expectation) in spec.instances.items()
    }
    wait_until(
        lambda: all(instance_row(i).activations for i, _ in attacks.values()),
        COMPLETION_BOUND_SECONDS,
        what="the attack to be under way",
    )

    neighbours, _ = workflows.start_instance(upload(neighbour, "hello", NEIGHBOUR).workflow)
    wrong = watch(neighbours, attacks)

    assert neighbours.status == Instance.Status.COMPLETE, (
        f"the neighbour's one-step workflow is {neighbours.status} after "
        f"{COMPLETION_BOUND_SECONDS} s beside {attack} ({mode})\n{stack.logs()}"
    )
    assert neighbours.output == "hello"
    assert not wrong, f"the hostile tenant's instances did not end as they should: {wrong}"
    neighbourhood.clean = True


def watch(neighbours: Instance, attacks: dict[str, tuple[Instance, Expectation]]) -> dict:
    """Poll until the neighbour's instance completed and every attack's instance ended as
    expected, or the bound passed; returns what is still wrong with the attack's."""
    deadline = time.monotonic() + COMPLETION_BOUND_SECONDS
    while True:
        neighbours.refresh_from_db()
        wrong = {
            label: problem
            for label, (instance, expectation) in attacks.items()
            if (problem := expectation(instance_row(instance)))
        }
        done = neighbours.status == Instance.Status.COMPLETE and not wrong
        if done or time.monotonic() > deadline:
            return wrong
        time.sleep(0.25)


def instance_row(instance: Instance) -> Instance:
    return Instance.objects.get(pk=instance.pk)
