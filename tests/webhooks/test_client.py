"""One attempt against real receivers on loopback: what a receiver that hangs, trickles,
redirects or answers without end can cost (the deadline, and 64 KiB read at most)."""

import contextlib
import time

import pytest

from tests.webhooks.receiver import receiving, reply
from webhooks import client
from webhooks.addresses import Target

LIMIT = 64 * 1024


def target(receiver, path="/hook") -> Target:
    return Target("http", "127.0.0.1", receiver.port, "127.0.0.1", path)


def post(receiver, deadline=2.0, max_read=LIMIT, body=b'{"a": 1}') -> client.Answer:
    headers = {"webhook-id": "1"}
    return client.post(target(receiver), body, headers, deadline=deadline, max_read=max_read)


@pytest.fixture
def bytes_read(monkeypatch):
    """How many bytes the client read of answers, in all."""
    counted = {"n": 0}
    readinto = client.CappedReader.readinto

    def counting(self, buffer):
        n = readinto(self, buffer)
        counted["n"] += n
        return n

    monkeypatch.setattr(client.CappedReader, "readinto", counting)
    return counted


def test_it_posts_the_body_with_the_headers_and_reads_the_status():
    with receiving() as receiver:
        answer = post(receiver, body=b'{"type": "instance.complete"}')
    (got,) = receiver.received
    assert answer == client.Answer(200, b"")
    assert got.path == "/hook" and got.body == b'{"type": "instance.complete"}'
    assert got.headers["webhook-id"] == "1"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"


def test_a_refusal_keeps_the_start_of_its_body_for_the_log():
    with receiving(lambda h: reply(h, 503, b"down for maintenance")) as receiver:
        assert post(receiver) == client.Answer(503, b"down for maintenance")


def test_a_receiver_that_hangs_costs_the_deadline_and_no_more():
    with receiving(lambda h: h.receiver.stop.wait(30)) as receiver:
        started = time.monotonic()
        with pytest.raises(client.AttemptFailed, match="deadline"):
            post(receiver, deadline=0.5)
    assert 0.45 < time.monotonic() - started < 1.5


def trickle(handler):
    """A status line and then headers, a few bytes every 50 ms, for ever: every read
    gets something well within any per-read timeout."""
    stop = handler.receiver.stop
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    while not stop.is_set():
        try:
            handler.wfile.write(b"X-Slow: a\r\n")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.05)


def test_a_trickling_receiver_is_cut_at_the_deadline_in_all_not_per_read():
    with receiving(trickle) as receiver:
        started = time.monotonic()
        with pytest.raises(client.AttemptFailed, match="deadline"):
            post(receiver, deadline=0.6)
    assert time.monotonic() - started < 1.5


def test_a_redirect_is_an_answer_and_is_not_followed():
    def redirect(handler):
        handler.send_response(307)
        handler.send_header("Location", "/elsewhere")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with receiving(redirect) as receiver:
        answer = post(receiver)
    assert answer.status == 307
    assert [r.path for r in receiver.received] == ["/hook"]


def endless(handler):
    """An answer that claims ten gigabytes and sends until the client goes."""
    handler.send_response(500)
    handler.send_header("Content-Length", str(10 * 2**30))
    handler.end_headers()
    chunk = b"x" * 65536
    try:
        while True:
            handler.wfile.write(chunk)
    except OSError:
        pass


def test_an_endless_answer_is_read_no_further_than_the_limit(bytes_read):
    with receiving(endless) as receiver:
        started = time.monotonic()
        answer = post(receiver, max_read=LIMIT)
    assert answer.status == 500 and answer.body == b"x" * 1024
    assert time.monotonic() - started < 1.5
    assert 0 < bytes_read["n"] <= LIMIT


def endless_headers(handler):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    try:
        while True:
            handler.wfile.write(b"X-Big: " + b"h" * 1000 + b"\r\n")
    except OSError:
        pass


def test_endless_headers_are_read_no_further_than_the_limit(bytes_read):
    with receiving(endless_headers) as receiver:
        started = time.monotonic()
        # Refused as not HTTP, or taken as a 200 cut short: both within the bounds.
        with contextlib.suppress(client.AttemptFailed):
            post(receiver, max_read=LIMIT)
    assert time.monotonic() - started < 1.5
    assert 0 < bytes_read["n"] <= LIMIT


def test_a_closed_port_is_a_failed_attempt_not_an_exception_of_another_kind():
    with receiving() as receiver:
        port = receiver.port
    closed = Target("http", "127.0.0.1", port, "127.0.0.1", "/")
    with pytest.raises(client.AttemptFailed, match="could not connect"):
        client.post(closed, b"{}", {}, deadline=1.0, max_read=LIMIT)
