"""Eligibility: every requested id lands in exactly one partition.

Read once for validate, and again under row locks in the transaction that applies each
chunk; the rule itself is each action's ``check(row)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from bulkops.actions import get_action, reasons
from bulkops.actions.base import ROW_FIELDS, BulkAction, SessionRow
from bulkops.actions.sql import AnyOf
from bulkops.models import Session, SessionExport
from bulkops.selectors import sessions_in_scope_by_id

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

#: Ids per query when reading rows for validate (well under SQLite's variable limit).
READ_BATCH = 2000


@dataclass
class Partition:
    """Every requested id lands in exactly one of these (DESIGN: partitions, never drops)."""

    eligible: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: The eligible ids by the status their session had before the action (what an
    #: undo restores; the succeeded items record it).
    eligible_by_status: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: The chunk read fewer pending items than it could hold: none is left after it.
    last: bool = False
    #: The chunk's last item in id order: the next chunk of this run starts after it.
    last_id: str = ""

    @property
    def processed(self) -> int:
        return len(self.eligible) + self.skipped_count + self.failed_count

    @property
    def failed_count(self) -> int:
        return sum(len(v) for v in self.failed.values())

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())


def session_rows(
    *,
    action: BulkAction,
    scope: QuerySet[Session],
    ids: list[str],
    lock: bool,
    skip_locked: bool = False,
) -> dict[str, SessionRow]:
    """The rows ``check`` decides on, by id; locked in primary-key order when ``lock``
    (so overlapping operations cannot deadlock) unless the action is read-only. With
    ``skip_locked``, rows another transaction holds are left out. Locked, each row also
    holds the action's ``apply_columns`` (``SessionRow.extra``) and on PostgreSQL its
    ctid (``SessionRow.tid``): ``apply_rows`` needs no second read."""
    qs = scope.filter(AnyOf("pk", ids)).order_by("pk")
    extra: tuple[str, ...] = ()
    if lock and not action.read_only:
        # Only the sessions' rows: a filter's scope may join the users (``owner``).
        qs = qs.select_for_update(skip_locked=skip_locked, of=("self",))
        extra = action.apply_columns
    if extra and connection.vendor == "postgresql":
        table = connection.ops.quote_name(Session._meta.db_table)
        qs = qs.annotate(_tid=RawSQL(f"{table}.ctid::text", ()))
        extra = (*extra, "_tid")
    with_exports: set[str] = set()
    if action.needs_exports:
        with_exports = set(
            SessionExport.objects.filter(AnyOf("session_id", ids))
            .values_list("session_id", flat=True)
            .distinct()
        )
    if not extra:
        return {
            row[0]: SessionRow(*row, has_exports=row[0] in with_exports)
            for row in qs.values_list(*ROW_FIELDS)
        }
    width = len(ROW_FIELDS)
    tid = extra[-1] == "_tid"
    return {
        row[0]: SessionRow(
            *row[:width],
            has_exports=row[0] in with_exports,
            extra=row[width : len(row) - tid],
            tid=row[-1] if tid else None,
        )
        for row in qs.values_list(*ROW_FIELDS, *extra)
    }


def partition(
    *,
    action: BulkAction,
    ids: Iterable[str],
    rows: dict[str, SessionRow],
    held: Collection[str] = (),
) -> Partition:
    """Sort ``ids`` into eligible / skipped / failed by ``action.check``; an id without a
    row is ``not_found``, or ``locked`` when it is in ``held``."""
    part = Partition()
    action.prefetch(list(rows))
    for sid in ids:
        row = rows.get(sid)
        if row is None:
            reason = reasons.LOCKED if sid in held else reasons.NOT_FOUND
        else:
            reason = action.check(row)
        if reason is None:
            part.eligible.append(sid)
            part.eligible_by_status[row.status].append(sid)
        elif reason in action.skip_reasons:
            part.skipped[reason].append(sid)
        else:
            part.failed[reason].append(sid)
    return part


def action_build(*, user: AbstractBaseUser, action: str, params: Any) -> BulkAction:
    """The registered action ``action`` for ``user`` with cleaned ``params``; raise
    ValidationError for an unknown action or bad parameters."""
    try:
        action_cls = get_action(action)
    except KeyError:
        raise ValidationError({"action": f"Unknown action {action!r}."}) from None
    if not isinstance(params, dict):
        raise ValidationError({"params": "Must be an object."})
    return action_cls(user=user, params=action_cls.clean_params(params))


def selection_rows(*, action: BulkAction, ids: list[str]) -> dict[str, SessionRow]:
    """The rows of ``ids`` in the user's scope as they stand now, read without locks in
    batches (validate, and the drift check of an action given a ``selection_token``)."""
    scope = sessions_in_scope_by_id(user=action.user, action=action)
    rows: dict[str, SessionRow] = {}
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        rows.update(session_rows(action=action, scope=scope, ids=batch, lock=False))
    return rows


class CheckDisagrees(RuntimeError):
    """An action's SQL eligibility left out a row its ``check`` finds eligible."""


def partition_applied(
    *,
    action: BulkAction,
    ids: list[str],
    applied: dict[str, list[str]],
    rest: dict[str, SessionRow],
    held: Collection[str] = (),
) -> Partition:
    """The partition of a chunk applied in SQL (``engine.chunksql``): ``applied`` (ids
    by previous status) are eligible; every other id is sorted by ``check`` as in
    ``partition`` (not in ``rest``: ``not_found``, or ``locked`` when in ``held``)."""
    done = {sid for sids in applied.values() for sid in sids}
    part = partition(action=action, ids=[s for s in ids if s not in done], rows=rest, held=held)
    if part.eligible:
        raise CheckDisagrees(
            f"{action.action_type}: sql_apply's condition and check() disagree on "
            f"{part.eligible[:5]}"
        )
    for status, sids in applied.items():
        part.eligible_by_status[status] = sids
        part.eligible.extend(sids)
    return part
