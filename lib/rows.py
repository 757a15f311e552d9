"""Model instances to and from rows of hand-written SQL, for the few hottest statements.

The ORM spends longer composing a join or an insert than PostgreSQL spends running
it; on the API's start path (token, workflow, instance) that was most of a request's
CPU. These helpers keep such statements short to write: column lists come from the
models, values go through the fields' own conversions, and what comes back is an
ordinary model instance, its other fields deferred (loaded if something asks).
"""

from __future__ import annotations

import contextlib
import functools

from django.db import connection


def columns(model, alias: str, names) -> list[str]:
    """`alias."column"` for each field name (or attname) of the model."""
    qn = connection.ops.quote_name
    return [f"{alias}.{qn(model._meta.get_field(n).column)}" for n in names]


def loaded(model, names, values, **known):
    """A model instance from the next len(names) values of the row iterator `values`,
    plus `known` field values; its other fields are deferred."""
    given = {n: from_db(model._meta.get_field(n), next(values)) for n in names}
    given.update(known)
    attnames = [f.attname for f in model._meta.concrete_fields if f.attname in given]
    return model.from_db(connection.alias, attnames, [given[n] for n in attnames])


def from_db(field, value):
    """What the ORM makes of a column's value: JSON is decoded by the field, not the driver."""
    if hasattr(field, "from_db_value"):
        return field.from_db_value(value, None, connection)
    return field.to_python(value)


def insert(obj) -> None:
    """INSERT the unsaved model instance `obj` (its defaults already applied) and set its
    primary key: what obj.save(force_insert=True) does, without composing the SQL."""
    with cursor() as rows:
        rows.execute(insert_sql(type(obj)), values_of(obj))
        saved(obj, rows.fetchone()[0])


def values_of(obj) -> list:
    """The database values of the unsaved `obj`, in the order of insertable(type(obj))."""
    return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in insertable(type(obj))]


def saved(obj, pk) -> None:
    """Mark `obj` as the stored row `pk`."""
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias


@functools.cache
def typed_placeholders(model) -> str:
    """`CAST(%s AS type)` for each insertable field: for an INSERT ... SELECT, whose
    values PostgreSQL cannot type from the target columns."""
    return ", ".join(f"CAST(%s AS {f.cast_db_type(connection)})" for f in insertable(model))


@functools.cache
def column_list(model) -> str:
    qn = connection.ops.quote_name
    return ", ".join(qn(f.column) for f in insertable(model))


@functools.cache
def insertable(model) -> tuple:
    return tuple(f for f in model._meta.concrete_fields if f is not model._meta.auto_field)


@functools.cache
def insert_sql(model) -> str:
    qn = connection.ops.quote_name
    marks = ", ".join(["%s"] * len(insertable(model)))
    return (
        f"INSERT INTO {qn(model._meta.db_table)} ({column_list(model)}) VALUES ({marks}) "
        f"RETURNING {qn(model._meta.pk.column)}"
    )


@contextlib.contextmanager
def cursor():
    """A cursor for the statements above. On PostgreSQL it binds on the server, so
    values are not rendered into the SQL text in Python, and with the connection's
    prepare_threshold (lib.env) psycopg has PostgreSQL prepare each statement once
    per connection, so it is not parsed and planned again on every call: for the
    engine's one-statement step records that was about two thirds of PostgreSQL's time.
    Errors are Django's, as with connection.cursor().
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as django_cursor:
            yield django_cursor
        return
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
        yield raw
