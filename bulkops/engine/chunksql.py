"""One chunk as one statement (PostgreSQL): lock, check, apply, return.

For an action that declares ``sql_apply`` (its eligibility as a SQL condition and its
change as a ``SET`` list), a chunk is a single round trip::

    WITH locked AS (SELECT id, owner_id, status, deleted_at FROM session
                    WHERE id = ANY(chunk) [AND owner_id = user]
                    ORDER BY id FOR UPDATE [SKIP LOCKED]),
         upd AS (UPDATE session AS s SET … FROM locked
                 WHERE s.ctid = locked.tid AND <eligible>
                 RETURNING s.id, locked.status AS previous)
    SELECT … FROM upd GROUP BY previous
    UNION ALL SELECT … FROM locked WHERE (<eligible>) IS NOT TRUE

The rows are locked in primary-key order, as every other chunk locks them, so
overlapping operations wait for each other instead of deadlocking. The statement
returns the applied ids grouped by the status they had before (what the items record
as ``previous_status``) and, one row each, the locked rows it did not apply: only those
go through the action's ``check(row)`` for their reason, so ``check`` still says why.

The items are not written here: the engine writes them per outcome group from the
arrays this statement returns (``outcomes.record``), as constants. Written inside this
statement they would need a join with ``upd`` (or an array computed from it), and
where many small operations left statistics that say "a handful of items per
operation", PostgreSQL plans that join as a nested loop comparing every item of the
chunk with every updated row: a million comparisons per 1,000-row chunk
(``tests/engine/test_chunk_plans.py`` pins every chunk statement's plan).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from bulkops.actions.base import ROW_FIELDS, BulkAction, SessionRow, SqlApply
from bulkops.actions.sql import AnyOf, array_param, is_postgresql
from bulkops.models import Session
from bulkops.selectors import scope_shape

#: The final SELECT: one row per previous status of the applied rows (their ids as an
#: array), then one row per locked row that was not applied. Neither joins ``locked``
#: to ``upd``: ``upd`` returns the status each row had, and the rows it left out are
#: the locked rows for which ``eligible`` is not true. A CTE's row estimate can be 1
#: (statistics taken before a user's sessions existed), and a join between two CTEs is
#: then a nested loop: 5,000 × 5,000 comparisons, seconds per chunk.
_RESULT = (
    "SELECT true, upd.previous, array_agg(upd.id ORDER BY upd.id)::text[], "
    "NULL::integer, NULL::timestamptz FROM upd GROUP BY upd.previous "
    "UNION ALL "
    "SELECT false, locked.status, ARRAY[locked.id]::text[], locked.owner_id, "
    "locked.deleted_at FROM locked WHERE ({eligible}) IS NOT TRUE"
)


def sql_plan(action: BulkAction, now) -> SqlApply | None:
    """The action's one-statement form, when it has one and the database can run it."""
    if action.read_only or not is_postgresql():
        return None
    return action.sql_apply(now=now)


def _lock_query(scope: QuerySet[Session], ids: list[str], skip_locked: bool) -> QuerySet:
    """The chunk's rows of ``scope``, locked in id order, with their ctid."""
    table = connection.ops.quote_name(Session._meta.db_table)
    # The UPDATE finds each locked row by its ctid (a TID scan), not through the
    # primary key's index again: a locked row cannot move until this transaction ends.
    return (
        scope.filter(AnyOf("pk", ids))
        .annotate(tid=RawSQL(f"{table}.ctid", ()))
        .order_by("pk")
        .select_for_update(skip_locked=skip_locked, of=("self",))
        .values_list(*ROW_FIELDS, "tid")
    )


#: Compiled lock queries by shape (``_lock_key``): (SQL, parameters, the index of the
#: chunk's ids among them). Building the query through the ORM was most of a small
#: chunk's CPU; its SQL only changes with what the key holds.
_compiled: dict[tuple, tuple[str, tuple, int]] = {}
#: Shapes kept at most (one per action, parameters and owner: forgotten all at once).
MAX_COMPILED = 1024
#: The ids a lock query is compiled with to find where the chunk's ids go: one of the
#: session-id alphabet (an array literal parameter) and one outside it (a list).
_PLACEHOLDER_IDS = {True: ["bulkops-compiled-ids"], False: ["bulkops compiled ids"]}


def _lock_key(scope: QuerySet[Session], param: Any, skip_locked: bool) -> tuple | None:
    """What the lock query's SQL depends on (``param``: the ids' ``array_param``), or
    None when it is not cached: a scope that is not ``sessions_in_scope_by_id``'s, no
    ids, or not PostgreSQL (the one database whose ids are one parameter, and the only
    one running this statement)."""
    shape = scope_shape(scope)
    if shape is None or not param or not is_postgresql():
        return None
    return (shape, skip_locked, connection.vendor, connection.alias, isinstance(param, str))


def lock_sql(scope: QuerySet[Session], ids: list[str], skip_locked: bool) -> tuple[str, list]:
    """The lock query's SQL and parameters: compiled once per shape (``_lock_key``)
    and reused with the chunk's ids in place of the ones it was compiled with."""
    param = array_param(ids)
    key = _lock_key(scope, param, skip_locked)
    if key is None:
        return _lock_query(scope, ids, skip_locked).query.sql_with_params()
    compiled = _compiled.get(key)
    if compiled is None:
        placeholder = _PLACEHOLDER_IDS[key[-1]]
        sql, params = _lock_query(scope, placeholder, skip_locked).query.sql_with_params()
        slots = [i for i, p in enumerate(params) if p == array_param(placeholder)]
        if len(slots) != 1:  # cannot tell where the ids go: compile every time
            return _lock_query(scope, ids, skip_locked).query.sql_with_params()
        if len(_compiled) >= MAX_COMPILED:
            _compiled.clear()
        compiled = _compiled[key] = (sql, tuple(params), slots[0])
    sql, params, slot = compiled
    filled = list(params)
    filled[slot] = param
    return sql, filled


def _statement(
    plan: SqlApply,
    scope: QuerySet[Session],
    ids: list[str],
    skip_locked: bool,
) -> tuple[str, list]:
    table = connection.ops.quote_name(Session._meta.db_table)
    lock_sql_, lock_params = lock_sql(scope, ids, skip_locked)
    sql = (
        f"WITH locked AS ({lock_sql_}), "
        f"upd AS (UPDATE {table} AS s SET {plan.assignments} FROM locked "
        f"WHERE s.ctid = locked.tid AND ({plan.eligible}) "
        "RETURNING s.id, locked.status AS previous) "
        f"{_RESULT.format(eligible=plan.eligible)}"
    )
    params = [*lock_params, *plan.assignment_params, *plan.eligible_params]
    return sql, [*params, *plan.eligible_params]


def lock_check_apply(
    *,
    plan: SqlApply,
    scope: QuerySet[Session],
    ids: list[str],
    skip_locked: bool = False,
) -> tuple[dict[str, list[str]], dict[str, SessionRow]]:
    """Run one chunk's statement. Return the applied ids by the status their session
    had before, and the rows locked but not applied (by id; ``check`` says why). An id
    in neither is not in scope, or (``skip_locked``) held by another transaction."""
    sql, params = _statement(plan, scope, ids, skip_locked)
    applied: dict[str, list[str]] = {}
    rest: dict[str, SessionRow] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for was_applied, status, sids, owner_id, deleted_at in cursor.fetchall():
            if was_applied:
                applied[status] = sids
            else:
                rest[sids[0]] = SessionRow(sids[0], owner_id, status, deleted_at)
    return applied, rest
