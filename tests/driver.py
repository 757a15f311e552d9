"""The engine run synchronously in the test process, with the sandbox's runtime in-process."""

from execution import engine
from execution.lifecycle import due
from execution.models import Instance


class Driver:
    """Runs the engine synchronously: enqueued instances are advanced in this process."""

    def __init__(self):
        self.queue: list[int] = []

    def enqueue(self, pk: int) -> None:
        self.queue.append(pk)

    def drain(self, limit: int = 200) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            engine.advance(self.queue.pop(0))
        raise AssertionError("the engine did not settle")

    def run(self, instance: Instance) -> Instance:
        self.drain()
        instance.refresh_from_db()
        return instance

    def tick(self) -> None:
        """What the clock does: send every due instance, then run them."""
        due.sweep()
        self.drain()


def activate_once(instance_pk: int) -> bool:
    """One activation of the instance and nothing more; True if it ran."""
    activation = engine.begin(instance_pk)
    if activation is None:
        return False
    engine.execute(activation, keep=False)
    return True
