"""A kept step's record updates its instance in place (HOT): no column it sets is indexed.

PostgreSQL updates a row without writing any of its table's indexes (a heap-only tuple)
only if no indexed column changes, counting the columns of index expressions and partial
index conditions. An instance has a dozen indexes, one of them on a random key; a step
recorded while the worker keeps the instance sets the columns below, so an index that
names one of them writes a dozen index entries per step (execution/0012 did, until 0014).
"""

import re

import pytest
from django.db import connection

from execution.lifecycle import records
from execution.models import Instance

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="HOT is PostgreSQL's"),
]


def kept_update_columns() -> set[str]:
    """The columns the kept record's UPDATE assigns, read from its SQL."""
    sql = records.lease_update_sql(keep=True)
    assignments = sql.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    return {re.match(r'\s*"?(\w+)"?\s*=', part).group(1) for part in assignments.split(",")}


def test_a_kept_steps_record_sets_no_indexed_column_of_the_instance():
    columns = kept_update_columns()
    assert {"last_seq", "lease_expires_at", "activations"} <= columns
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid = %s::regclass",
            [Instance._meta.db_table],
        )
        indexes = cursor.fetchall()
    assert len(indexes) > 5
    for name, definition in indexes:
        named = set(re.findall(r"\w+", definition))
        assert not columns & named, f"{name} holds {columns & named}: {definition}"
