"""The watcher thread: running marks and lease renewals on time, without a wake per step."""

import threading
import time

from execution import watch as watch_module
from execution.watch import Watch, Watcher


def recorder():
    marks, renewals = [], []
    done = threading.Event()

    def mark(intent, at):
        marks.append((intent["index"], at))
        done.set()
        return "row"

    return marks, renewals, done, mark, lambda: renewals.append(time.monotonic())


def test_an_announced_step_is_marked_after_the_delay_and_leases_are_renewed(settings):
    settings.STEPWELL_RUNNING_MARK_SECONDS = 0.05
    settings.STEPWELL_LEASE_SECONDS = 0.3  # renewed every 0.1 s
    marks, renewals, done, mark, renew = recorder()
    watcher = Watcher()
    w = Watch(mark, renew)
    watcher.add(w)
    announced = time.monotonic()
    watcher.update(w, {"index": 3})
    assert done.wait(2)
    late = time.monotonic() - announced
    assert 0.05 <= late < 0.05 + 0.1, late
    time.sleep(0.35)
    watcher.remove(w)
    assert [index for index, _ in marks] == [3] and w.marked == "row"
    assert len(renewals) >= 2


def test_a_step_that_ends_before_the_delay_is_never_marked(settings):
    settings.STEPWELL_RUNNING_MARK_SECONDS = 0.05
    marks, _, done, mark, renew = recorder()
    watcher = Watcher()
    w = Watch(mark, renew)
    watcher.add(w)
    watcher.update(w, {"index": 0})
    watcher.remove(w)
    assert not done.wait(0.2) and marks == []


def test_an_idle_watcher_sleeps_until_a_watch_is_added(settings, monkeypatch):
    settings.STEPWELL_RUNNING_MARK_SECONDS = 0.02
    monkeypatch.setattr(watch_module, "IDLE_AFTER_SECONDS", 0.05)
    marks, _, done, mark, renew = recorder()
    watcher = Watcher()
    deadline = time.monotonic() + 2
    while not watcher.idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watcher.idle  # nothing to watch: it waits for an add, it does not tick
    w = Watch(mark, renew)
    watcher.add(w)
    watcher.update(w, {"index": 1})
    assert done.wait(1) and marks[0][0] == 1
    watcher.remove(w)
