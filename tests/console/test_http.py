"""console/http.py: Django's handler on a pool of threads behind the ASGI server."""

import asyncio
import io
import json

import pytest
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from console.http import ThreadedHTTP, environ_of


@csrf_exempt
def echo(request):
    answer = HttpResponse(
        json.dumps(
            {
                "method": request.method,
                "path": request.path,
                "query": request.GET.get("q"),
                "body": request.body.decode(),
                "cookie": request.COOKIES.get("b"),
                "accept": request.headers.get("Accept"),
            }
        ),
        content_type="application/json",
        status=202,
    )
    answer.set_cookie("seen", "yes")
    return answer


def stream(request):
    return StreamingHttpResponse(iter([b"one ", b"", b"two ", b"three"]))


urlpatterns = [path("echo/", echo), path("stream/", stream)]


def scope(path: str, headers=(), method: str = "POST", query: bytes = b"") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
    }


def serve(scope: dict, *bodies: bytes, disconnect: bool = False) -> list[dict]:
    messages = [
        {"type": "http.request", "body": b, "more_body": i < len(bodies) - 1}
        for i, b in enumerate(bodies)
    ]
    if disconnect:
        messages[-1] = {"type": "http.disconnect"}
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(ThreadedHTTP(threads=2)(scope, receive, send))
    return sent


@pytest.fixture(autouse=True)
def these_urls():
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"]):
        yield


def test_a_request_in_several_parts_reaches_django_whole_and_the_answer_comes_back():
    headers = [
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
        (b"accept", b"text/html"),
        (b"accept", b"application/json"),
    ]
    sent = serve(scope("/echo/", headers, query=b"q=%C3%A9"), b'{"x": ', b"1}")
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 202
    assert (b"content-type", b"application/json") in start["headers"]
    assert any(n == b"set-cookie" and v.startswith(b"seen=yes;") for n, v in start["headers"])
    answer = json.loads(body["body"])
    assert answer == {
        "method": "POST",
        "path": "/echo/",
        "query": "é",
        "body": '{"x": 1}',
        "cookie": "2",
        "accept": "text/html,application/json",
    }
    assert not body.get("more_body")


def test_a_streaming_answer_is_sent_chunk_by_chunk():
    sent = serve(scope("/stream/", method="GET"), b"")
    assert sent[0]["status"] == 200
    chunks = [m["body"] for m in sent[1:] if m.get("body")]
    assert chunks == [b"one ", b"two ", b"three"]
    assert sent[-1] == {"type": "http.response.body"}


def test_a_client_gone_before_the_whole_body_gets_nothing():
    assert serve(scope("/echo/"), b"part", b"", disconnect=True) == []


def test_the_body_length_is_what_arrived_whatever_was_declared():
    environ = environ_of(scope("/echo/", [(b"content-length", b"99")]), io.BytesIO(b"abc"))
    assert environ["CONTENT_LENGTH"] == "3"
    assert environ["HTTP_HOST"] == "127.0.0.1:8000" and environ["PATH_INFO"] == "/echo/"


def test_a_path_in_utf8_reaches_django_decoded():
    sent = serve(scope("/echo/", method="GET"), b"")
    assert json.loads(sent[1]["body"])["path"] == "/echo/"
    environ = environ_of(scope("/wörk/"), io.BytesIO())
    assert environ["PATH_INFO"].encode("latin1").decode() == "/wörk/"
