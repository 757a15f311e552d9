"""Secrets at rest: encrypted with the first key, readable with any, rotated by a command."""

import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from lib.env import ConfigError, env_fernet_keys, new_fernet_key
from tenants.models import Secret
from tenants.secrets import decrypted, pairs_subquery, rotate_all, set_secret, values_for

OLD, NEW = new_fernet_key(), new_fernet_key()


def test_values_are_stored_encrypted_and_read_back_for_an_activation(acme, globex):
    set_secret(acme, "API_KEY", "acme-value-123")
    set_secret(globex, "API_KEY", "globex-value-456")
    row = Secret.objects.get(tenant=acme)
    assert "acme-value-123" not in row.ciphertext
    assert values_for(acme.pk) == {"API_KEY": "acme-value-123"}
    assert values_for(globex.pk) == {"API_KEY": "globex-value-456"}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the subquery is PostgreSQL's")
def test_the_claims_subquery_reads_what_values_for_reads(acme, globex):
    set_secret(acme, "B_KEY", "acme-value-b")
    set_secret(acme, "A_KEY", "acme-value-a")
    set_secret(globex, "API_KEY", "globex-value-456")
    Secret.objects.filter(tenant=globex).update(ciphertext="not-a-fernet-token")
    for tenant in (acme, globex):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {pairs_subquery('%s')}", [tenant.pk])
            (pairs,) = cursor.fetchone()
        assert decrypted(tenant.pk, pairs) == values_for(tenant.pk)
    assert values_for(acme.pk) == {"A_KEY": "acme-value-a", "B_KEY": "acme-value-b"}
    assert values_for(globex.pk) == {}  # undecryptable: left out by both, and logged
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pairs_subquery('%s')}", [0])  # no secrets: empty, not NULL
        assert cursor.fetchone()[0] == []


def test_rotation_re_encrypts_everything_with_the_first_key_in_batches(acme, globex):
    with override_settings(STEPWELL_SECRET_KEYS=[OLD]):
        for i in range(5):
            set_secret(acme, f"KEY_{i}", f"value-number-{i}")
        set_secret(globex, "OTHER", "globex-secret")
    with override_settings(STEPWELL_SECRET_KEYS=[NEW, OLD]):
        # Readable before the rotation too: every key decrypts.
        assert values_for(acme.pk)["KEY_3"] == "value-number-3"
        out = io.StringIO()
        call_command("rotate_secret_keys", "--batch", "2", stdout=out)
        assert "re-encrypted 6 secrets" in out.getvalue()
    for row in Secret.objects.all():
        Fernet(NEW).decrypt(row.ciphertext.encode())
        with pytest.raises(InvalidToken):
            Fernet(OLD).decrypt(row.ciphertext.encode())
    with override_settings(STEPWELL_SECRET_KEYS=[NEW]):  # the old key dropped
        assert values_for(acme.pk) == {f"KEY_{i}": f"value-number-{i}" for i in range(5)}
        assert values_for(globex.pk) == {"OTHER": "globex-secret"}


def test_a_secret_no_key_decrypts_is_left_out_not_fatal(acme):
    with override_settings(STEPWELL_SECRET_KEYS=[OLD]):
        set_secret(acme, "LOST", "encrypted-with-old")
    with override_settings(STEPWELL_SECRET_KEYS=[NEW]):
        set_secret(acme, "KEPT", "encrypted-with-new")
        assert values_for(acme.pk) == {"KEPT": "encrypted-with-new"}
        rotated, unreadable = rotate_all()
        assert rotated == 1
        assert [row.name for row in unreadable] == ["LOST"]
        with pytest.raises(CommandError, match="1 secrets were left"):
            call_command("rotate_secret_keys", stdout=io.StringIO(), stderr=io.StringIO())


def test_bad_keys_stop_start_up_without_showing_them(monkeypatch):
    monkeypatch.setenv("STEPWELL_SECRET_KEYS", f"{NEW}, not-a-key-at-all")
    with pytest.raises(ConfigError) as raised:
        env_fernet_keys("STEPWELL_SECRET_KEYS")
    assert "key 2" in str(raised.value)
    assert "not-a-key-at-all" not in str(raised.value)
    monkeypatch.setenv("STEPWELL_SECRET_KEYS", f" {NEW} ,{OLD}")
    assert env_fernet_keys("STEPWELL_SECRET_KEYS") == [NEW, OLD]
