"""SQL helpers for the engine's hot path (``apply()`` and the per-chunk queries).

A chunk is up to ``BULKOPS_CHUNK_SIZE`` ids. ``filter(pk__in=ids)`` turns them into one
placeholder per id: Django prepares each value and psycopg quotes each one, ~3 ms of
CPU per 1,000 ids and statement (measured; docs/benchmarks.md). ``AnyOf`` sends the
whole chunk as one array parameter instead (``id = ANY(%s)``) on PostgreSQL; other
databases get the usual ``IN (…)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import connection
from django.db.models import BooleanField, F, Func

_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AnyOf(Func):
    """Filter expression: ``field`` is one of ``ids`` — ``queryset.filter(AnyOf("pk", ids))``."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, field: str, ids: Iterable[str]) -> None:
        super().__init__(F(field))
        self.ids = list(ids)

    def as_sql(self, compiler, connection, **extra_context):
        lhs, params = compiler.compile(self.get_source_expressions()[0])
        if not self.ids:
            return "1 = 0", []
        if connection.vendor == "postgresql":
            if all(_PLAIN_ID.fullmatch(i) for i in self.ids):
                # Ids of the session-id alphabet need no quoting inside an array
                # literal: one text parameter instead of one adapted value per id
                # (psycopg quotes each list element in Python; ~5 ms per 5,000).
                return f"{lhs} = ANY(%s::varchar[])", [*params, "{" + ",".join(self.ids) + "}"]
            return f"{lhs} = ANY(%s)", [*params, self.ids]
        return f"{lhs} IN ({', '.join(['%s'] * len(self.ids))})", [*params, *self.ids]


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def in_key_order() -> Iterator[None]:
    """The reads inside walk their index in key order (``enable_sort`` off for the
    transaction until the block ends; PostgreSQL): whatever the planner statistics say —
    an operation's rows were all written since the last ANALYZE — a plan that collects
    every row past the cursor and sorts them would make each read as slow as the whole
    walk. Inside a transaction (the setting is local to it)."""
    if not is_postgresql():
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('enable_sort', 'off', true)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('enable_sort', 'on', true)")
