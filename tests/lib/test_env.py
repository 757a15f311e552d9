import re
from pathlib import Path

import pytest

from execution.sandbox.ranges import unreachable_because
from lib.env import (
    ConfigError,
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_ip_list,
    env_list,
)


def test_booleans_accept_the_usual_spellings_and_refuse_the_rest(monkeypatch):
    for raw, value in [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False)]:
        monkeypatch.setenv("X", raw)
        assert env_bool("X", not value) is value
    monkeypatch.setenv("X", "maybe")
    with pytest.raises(ConfigError, match="X='maybe' is not a boolean"):
        env_bool("X", False)


def test_numbers_are_checked_for_type_and_minimum(monkeypatch):
    monkeypatch.setenv("N", "12")
    assert env_int("N", 1) == 12
    monkeypatch.setenv("N", "twelve")
    with pytest.raises(ConfigError, match="not an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "0.01")
    with pytest.raises(ConfigError, match="below the minimum"):
        env_float("N", 1.0, minimum=0.05)
    monkeypatch.delenv("N")
    assert env_int("N", 7) == 7


def test_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example, b.example,,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_ip_lists_refuse_anything_but_addresses(monkeypatch):
    monkeypatch.setenv("NS", "9.9.9.9, 2620:fe::fe")
    assert env_ip_list("NS") == ["9.9.9.9", "2620:fe::fe"]
    monkeypatch.setenv("NS", "9.9.9.9,dns.example")
    with pytest.raises(ConfigError, match=r"NS: 'dns\.example' is not an IP address"):
        env_ip_list("NS")
    monkeypatch.setenv("NS", "9.9.9.9,10.0.0.2")
    refused = re.escape("NS: 10.0.0.2 will not do: 10.0.0.0/8 is blocked")
    with pytest.raises(ConfigError, match=refused):
        env_ip_list("NS", unreachable_because)
    monkeypatch.delenv("NS")
    assert env_ip_list("NS") == []


def test_database_urls():
    pg = database_from_url("postgres://u:p%40ss@db.internal:5433/stepwell", Path("/srv"))
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "stepwell",
        "u",
        "p@ss",
        "db.internal",
        "5433",
    )
    assert database_from_url("postgresql://localhost/x", Path("/srv"))["NAME"] == "x"
    assert (
        database_from_url("sqlite:///var/db.sqlite3", Path("/srv"))["NAME"] == "/srv/var/db.sqlite3"
    )
    assert database_from_url("sqlite:////tmp/a.db", Path("/srv"))["NAME"] == "/tmp/a.db"
    with pytest.raises(ConfigError, match="not supported"):
        database_from_url("mysql://x/y", Path("/srv"))
    with pytest.raises(ConfigError, match="names no database"):
        database_from_url("postgres://localhost/", Path("/srv"))
