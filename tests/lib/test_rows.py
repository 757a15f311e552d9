"""The row mapper of the hand-written statements: what it writes and reads is what the
ORM would write and read."""

from django.db import connection

from lib import rows
from tenants.models import AuditLog


def entry(**fields) -> AuditLog:
    return AuditLog(action="token.created", target_type="token", target_id="7", **fields)


def stored(pk) -> dict:
    row = AuditLog.objects.filter(pk=pk).values().get()
    del row["id"]
    return row


def test_an_insert_leaves_the_row_the_orm_leaves(acme):
    by_hand = entry(tenant=acme, details={"name": "ci", "ids": [1, 2]}, reason="why\nnot")
    by_orm = entry(tenant=acme, details={"name": "ci", "ids": [1, 2]}, reason="why\nnot")
    by_orm.created_at = by_hand.created_at

    rows.insert(by_hand)
    by_orm.save()

    assert by_hand.pk is not None and not by_hand._state.adding
    assert by_hand.pk != by_orm.pk
    assert stored(by_hand.pk) == stored(by_orm.pk)


def test_a_loaded_row_is_a_model_instance_with_its_other_fields_deferred(acme):
    saved = AuditLog.objects.create(tenant=acme, action="quota.changed", details={"a": [1]})
    names = ["id", "action", "details"]
    select = ", ".join(rows.columns(AuditLog, "a", names))

    with rows.cursor() as cursor:
        table = connection.ops.quote_name(AuditLog._meta.db_table)
        cursor.execute(f"SELECT {select} FROM {table} a WHERE a.id = %s", [saved.pk])
        loaded = rows.loaded(AuditLog, names, iter(cursor.fetchone()), tenant_id=acme.pk)

    assert (loaded.pk, loaded.action, loaded.details) == (saved.pk, "quota.changed", {"a": [1]})
    assert loaded.tenant_id == acme.pk
    assert {"reason", "created_at"} <= loaded.get_deferred_fields()
    assert loaded.reason == ""  # loaded when asked
