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
from typing import Any

from django.db import connection
from django.db.models import BooleanField, F, Func, Model


class AnyOf(Func):
    """Filter expression: ``field`` is one of ``ids`` — ``queryset.filter(AnyOf("pk", ids))``."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, field: str, ids: Iterable[str]) -> None:
        super().__init__(F(field))
        self.ids = list(ids)

    def as_sql(self, compiler, connection, **extra_context):
        lhs, params = compiler.compile(self.get_source_expressions()[0])
        sql, ids = any_of(lhs, self.ids)
        return sql, [*params, *ids]


#: Values of the session-id alphabet joined by commas (``plain_array``).
_PLAIN_LIST = re.compile(r"[A-Za-z0-9_-]{1,64}(?:,[A-Za-z0-9_-]{1,64})*")


def plain_array(values: list[str]) -> str | None:
    """``values`` as a PostgreSQL array literal (``{a,b}``) when each is of the
    session-id alphabet (no quoting needed inside the literal); else None. One text
    parameter instead of one adapted value per element (psycopg quotes each list
    element in Python; ~5 ms per 5,000), checked by one scan of the joined text: no
    value holds a comma when the commas are one fewer than the values."""
    joined = ",".join(values)
    if values and joined.count(",") == len(values) - 1 and _PLAIN_LIST.fullmatch(joined):
        return "{" + joined + "}"
    return None


def any_of(column: str, ids: list[str]) -> tuple[str, list]:
    """``column`` (quoted SQL) is one of ``ids``, as SQL and its parameters: one array
    parameter on PostgreSQL, ``IN (…)`` elsewhere (``AnyOf`` in a queryset)."""
    if not ids:
        return "1 = 0", []
    if connection.vendor == "postgresql":
        param = array_param(ids)
        cast = "::varchar[]" if isinstance(param, str) else ""
        return f"{column} = ANY(%s{cast})", [param]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def array_param(values: list[str]) -> str | list[str]:
    """``values`` as one PostgreSQL array parameter: the text literal ``plain_array``
    makes when it can (cast it to an array in the SQL), else the list itself."""
    literal = plain_array(values)
    return values if literal is None else literal


def plain_update(model: type[Model], values: dict[str, Any], where: str, params: list) -> int:
    """``UPDATE`` ``model``'s rows where ``where`` (SQL, with ``params``) holds, setting
    ``values`` (field name → value, prepared for the database as the ORM prepares
    them); return the rows updated. For the hot path's fixed statements: the ORM's
    ``update()`` costs several times the statement's own CPU to build."""
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in values]
    sets = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    prepared = [
        f.get_db_prep_save(v, connection) for f, v in zip(fields, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {where}", [*prepared, *params]
        )
        return cursor.rowcount


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
