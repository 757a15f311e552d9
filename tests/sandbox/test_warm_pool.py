"""The warm pool's bookkeeping with stand-in jails: no nsjail, milliseconds."""

import threading
import time

from execution.sandbox.limits import Limits
from execution.sandbox.warm_jail import WarmStartError
from execution.sandbox.warm_pool import JailKey, JailPool

KEY = JailKey("tenant-1", "sha-1", Limits())


class StandInJail:
    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.steps = 0
        self.started = time.monotonic()
        self.stopped = False

    def fault(self) -> str | None:
        return None

    def stop(self) -> None:
        self.alive = False
        self.stopped = True


def background_pool(capacity: int = 2) -> JailPool:
    return JailPool(capacity, 300, 600, 1000, start_in_background=True)


def lease_once(pool: JailPool, start):
    with pool.lease(KEY, start) as jail:
        return jail


def wait_for(predicate) -> None:
    deadline = time.monotonic() + 5
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert predicate()


def test_a_miss_runs_fresh_while_the_jail_starts_for_the_next_activation():
    pool = background_pool()
    release = threading.Event()
    starts = []

    def start():
        starts.append(StandInJail(f"jail{len(starts)}"))
        release.wait(5)
        return starts[-1]

    try:
        assert lease_once(pool, start) is None  # the caller runs this one fresh
        wait_for(lambda: starts)
        assert lease_once(pool, start) is None  # still starting: fresh, no second start
        release.set()
        wait_for(lambda: pool.jails())
        assert lease_once(pool, start) is starts[0]
        assert len(starts) == 1
    finally:
        release.set()
        pool.close()
    assert starts[0].stopped


def test_a_jail_that_fails_to_start_in_the_background_frees_its_room():
    pool = background_pool(capacity=1)
    attempts = []

    def failing():
        attempts.append(1)
        raise WarmStartError("the zygote did not load")

    try:
        assert lease_once(pool, failing) is None
        wait_for(lambda: not pool._starting_keys)
        assert pool.jails() == []
        assert lease_once(pool, failing) is None  # room again: it may try again
        wait_for(lambda: len(attempts) == 2)
    finally:
        pool.close()


def test_a_jail_started_after_the_pool_closed_is_stopped():
    pool = background_pool()
    release = threading.Event()
    jail = StandInJail("late")

    def start():
        release.wait(5)
        return jail

    assert lease_once(pool, start) is None
    pool.close()
    release.set()
    wait_for(lambda: jail.stopped)
    assert pool.jails() == []
