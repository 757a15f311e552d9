import json

import pytest

from tests.factories import make_token


class Api:
    """A client of the HTTP API holding one bearer token."""

    def __init__(self, client, token: str):
        self.client = client
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body=None):
        response = self.request(method, path, body)
        return response.status_code, response.json()

    def request(self, method: str, path: str, body=None, **extra):
        kwargs = {"headers": self.headers, **extra}
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            kwargs.update(data=data, content_type="application/json")
        return getattr(self.client, method)("/api/v1" + path, **kwargs)


@pytest.fixture
def alice(client, acme):
    return Api(client, make_token(acme, "alice's"))


@pytest.fixture
def bob(client, globex):
    return Api(client, make_token(globex, "bob's"))
