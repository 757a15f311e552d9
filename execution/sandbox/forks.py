"""What a forked worker process must not inherit from its parent's warm jails."""

import os
import threading
import weakref


def forgotten_in_forked_children() -> weakref.WeakSet:
    """A registry of objects (warm-jail pools, spare jails) whose `_lock` is made anew and
    whose `_forget_if_forked()` runs in every forked child: another thread of the parent
    may have held the lock at the fork, and the parent's jails are not the child's."""
    registry: weakref.WeakSet = weakref.WeakSet()

    def after_in_child() -> None:
        for owner in list(registry):
            owner._lock = threading.Lock()
            owner._forget_if_forked()

    os.register_at_fork(after_in_child=after_in_child)
    return registry
