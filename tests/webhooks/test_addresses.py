"""Where a webhook may point (SSRF), with a stubbed resolver: no test resolves real names."""

import pytest

from webhooks import addresses
from webhooks.addresses import Refused, Target, check


@pytest.fixture
def public(settings, monkeypatch):
    """A deployment with no host list and no private addresses allowed, whose resolver
    knows a few names (and fails the test for any other)."""
    settings.STEPWELL_WEBHOOK_HOSTS = []
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = False
    names = {
        "hooks.example.com": ["93.184.215.14"],
        "internal.example.com": ["10.1.2.3"],
        "mixed.example.com": ["93.184.215.14", "127.0.0.1"],
        "metadata.example.com": ["169.254.169.254"],
        "v6.example.com": ["2606:4700::6810:84e5"],
        "mapped.example.com": ["::ffff:127.0.0.1"],
    }
    asked = []

    def resolve(host, port):
        asked.append(host)
        return names[host]

    monkeypatch.setattr(addresses, "resolve", resolve)
    return asked


def test_a_public_host_is_checked_and_connected_to_by_its_address(public):
    assert check("https://hooks.example.com/in?x=1") == Target(
        "https", "hooks.example.com", 443, "93.184.215.14", "/in?x=1"
    )
    assert check("http://v6.example.com:8080").ip == "2606:4700::6810:84e5"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "gopher://hooks.example.com/",
        "hooks.example.com/path",
        "http:///nohost",
        "http://user:pw@hooks.example.com/",
        "http://hooks.example.com:99999/",
        "http://hooks.example.com/a b",
        "http://hooks.example.com/\r\nX-Injected: 1",
        "http://hooks.example.com/#frag",
        "http://hooks.example.com/caf\u00e9",
        "http://b\u00fccher.example/",
    ],
)
def test_only_plain_http_and_https_urls_are_taken(public, url):
    with pytest.raises(Refused):
        check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://internal.example.com/",
        "http://127.0.0.1:8000/",
        "http://[::1]/",
        "http://192.168.1.10/",
        "http://172.16.0.1/",
        "http://mixed.example.com/",  # one bad answer is enough
        "http://mapped.example.com/",  # IPv4 loopback dressed as IPv6
        "http://100.64.0.1/",  # carrier-grade NAT
    ],
)
def test_loopback_and_private_addresses_are_refused_by_default(public, url):
    with pytest.raises(Refused, match="loopback or private"):
        check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.example.com/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_even_with_private_allowed(
    public, settings, url
):
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(Refused, match="link-local, metadata or reserved"):
        check(url)


def test_private_addresses_may_be_allowed_by_the_deployment(public, settings):
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = True
    assert check("http://internal.example.com/").ip == "10.1.2.3"
    assert check("http://127.0.0.1:9/").ip == "127.0.0.1"


def test_with_a_host_list_any_other_host_is_refused_without_being_resolved(public, settings):
    settings.STEPWELL_WEBHOOK_HOSTS = ["hooks.example.com", "10.0.0.0/8"]
    settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(Refused, match="not one of STEPWELL_WEBHOOK_HOSTS"):
        check("http://evil.example.net/")
    with pytest.raises(Refused, match="not one of STEPWELL_WEBHOOK_HOSTS"):
        check("http://192.168.0.1/")
    assert public == []  # nothing was resolved
    assert check("http://HOOKS.example.com/x").ip == "93.184.215.14"
    assert check("http://10.9.8.7/").ip == "10.9.8.7"


def test_a_listed_host_still_may_not_resolve_to_a_private_address(public, settings):
    settings.STEPWELL_WEBHOOK_HOSTS = ["internal.example.com"]
    with pytest.raises(Refused, match="loopback or private"):
        check("http://internal.example.com/")


def test_a_name_that_does_not_resolve_is_refused(public, monkeypatch):
    def fails(host, port):
        raise OSError("no such name")

    monkeypatch.setattr(addresses, "resolve", fails)
    with pytest.raises(Refused, match="does not resolve"):
        check("http://nowhere.example.com/")


def test_the_tests_own_settings_keep_webhooks_on_loopback():
    # The autouse fixture of tests/conftest.py: localhost is stubbed, nothing else resolves.
    assert check("http://localhost:8000/x").ip == "127.0.0.1"
    with pytest.raises(Refused, match="STEPWELL_WEBHOOK_HOSTS"):
        check("https://example.com/")
