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
import logging
import weakref
from collections.abc import Callable

from django.db import ProgrammingError, connection

log = logging.getLogger(__name__)


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


UNDEFINED_FUNCTION = "42883"  # PostgreSQL's SQLSTATE


class SessionFunction:
    """A hand-written statement that PostgreSQL plans once per connection and keeps: a
    PL/pgSQL function of the session (`pg_temp`) whose one statement has its generic plan
    forced, made from the statement's text at its first call on each connection (so it
    is always the code's: nothing is stored in the database).

    A statement prepared by cursor() is planned again at every call whenever its generic
    plan looks costlier than the ones made for the values given. On a big table a
    comparison with a time that is a parameter is costed as a third of its rows, so a
    generic plan can look a thousand times costlier than it is and the statement is
    planned afresh every time, for longer than it runs (bench/README.md, "bench/scale.py").
    Only a statement whose plan is good whatever its values belongs here: its generic
    plan must read no big table whole (tests/execution/test_query_plans.py). JIT is off:
    it would compile that inflated cost at every call. Where server sessions do not keep
    what a session makes (PgBouncer's transaction pooling), the statement is run as
    prepared, as before.
    """

    def __init__(
        self, name: str, parameters: tuple[str, ...], returns: str, body: Callable[[], str]
    ):
        """`parameters`: the SQL types of $1, $2... in `body()`, the statement."""
        self.name = name
        self.parameters = parameters
        self.returns = returns
        self.body = body
        self.made: weakref.WeakSet = weakref.WeakSet()  # the connections that have it
        self.sessions_keep_it = True

    def definition(self) -> str:
        return (
            f"CREATE OR REPLACE FUNCTION pg_temp.{self.name}({', '.join(self.parameters)}) "
            f"RETURNS {self.returns} LANGUAGE plpgsql "
            "SET plan_cache_mode = force_generic_plan SET jit = off "
            f"AS $statement$ BEGIN RETURN QUERY {self.body()}; END $statement$"
        )

    def call(self, values: list, otherwise: Callable[[], list[tuple]]) -> list[tuple]:
        """The statement's rows, from the session's function; from `otherwise()`, the
        statement prepared as any other, where sessions do not keep what they make.
        Outside a transaction only: the function is made in one of its own."""
        assert not connection.in_atomic_block, "a session function is made on its own"
        if not self.sessions_keep_it:
            return otherwise()
        try:
            return self.run(values)
        except ProgrammingError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != UNDEFINED_FUNCTION:
                raise
            # Made on this connection and gone: its transactions go to other server
            # sessions (PgBouncer's transaction pooling), or a DISCARD dropped it. This
            # process stops making it; the statement failed before it changed anything.
            log.warning("PostgreSQL sessions do not keep pg_temp.%s: not used", self.name)
            self.sessions_keep_it = False
            return otherwise()

    def run(self, values: list) -> list[tuple]:
        marks = ", ".join(["%s"] * len(self.parameters))
        with cursor() as rows:
            if connection.connection not in self.made:
                rows.execute(self.definition())
                self.made.add(connection.connection)
            rows.execute(f"SELECT * FROM pg_temp.{self.name}({marks})", values)
            return rows.fetchall()
