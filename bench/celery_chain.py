"""Peer (c) of bench/peers.py: an M-step workflow as a chain of plain Celery tasks.

No Django, no database, no sandbox: each step is a task in the worker's own process,
and the chain passes the running total along through a Redis result backend.

    celery -A bench.celery_chain worker -Q bench-chain -c 2   # with STEPWELL_BENCH_CHAIN_REDIS
"""

import os
import time

from celery import Celery, chain

QUEUE = "bench-chain"
REDIS_URL = os.environ.get("STEPWELL_BENCH_CHAIN_REDIS", "redis://127.0.0.1:6379/15")

app = Celery("bench_chain", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
)


@app.task(name="bench_chain.step")
def step(previous: dict, i: int) -> dict:
    """A trivial step; `at` is when the step ended, so the last one's is the workflow's end."""
    return {"total": previous["total"] + i, "at": time.time()}


def workflow(m: int):
    """The M-step chain: step 0 gets the seed, every later step the one before's result."""
    first = step.s({"total": 0}, 0)
    return chain(first, *(step.s(i) for i in range(1, m)))
