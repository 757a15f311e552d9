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


def test_renewals_come_before_marks_and_a_mark_that_raises_skips_none():
    calls = []

    def mark(intent, at):
        calls.append("mark")
        raise ValueError("A string literal cannot contain NUL (0x00) characters.")

    first, second = (Watch(mark, lambda n=n: calls.append(f"renew {n}")) for n in (1, 2))
    for w in (first, second):
        w.renew_at = w.intent_at = 0.0  # both due long ago
        w.intent = {"index": 0, "name": "a\x00b"}

    watch_module.look_after([first, second])

    assert calls == ["renew 1", "renew 2", "mark", "mark"]
    assert first.intent is None and first.marked is None  # dropped, not tried every tick


def test_the_watcher_thread_survives_marks_that_raise_and_renews_on(settings):
    settings.STEPWELL_RUNNING_MARK_SECONDS = 0.01
    settings.STEPWELL_LEASE_SECONDS = 0.3  # renewed every 0.1 s
    renewed = threading.Semaphore(0)
    marks = []

    def mark(intent, at):
        marks.append(intent["index"])
        raise ValueError("a mark the jail made fail")

    watcher = Watcher()
    w = Watch(mark, renewed.release)
    watcher.add(w)
    try:
        for index in range(3):
            watcher.update(w, {"index": index})
            assert renewed.acquire(timeout=5)
        assert renewed.acquire(timeout=5)
    finally:
        watcher.remove(w)
    assert watcher.thread.is_alive()
    assert marks  # the marks were tried, and failed, on the same thread
