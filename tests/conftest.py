import pytest

from tests.factories import make_tenant, make_token


@pytest.fixture
def acme(db):
    return make_tenant("acme", "alice")


@pytest.fixture
def globex(db):
    return make_tenant("globex", "bob")


@pytest.fixture
def acme_token(acme):
    return make_token(acme)


@pytest.fixture
def globex_token(globex):
    return make_token(globex)
