"""``bulkops_bench --large 1m`` (the default, in this process): one large operation's
figures (validate, create, run, undo, export, storage) at a size on the configured
PostgreSQL database.

For the staff user with ``bulkops.run_large_operation``, a close of every live
``active`` session: validate (time and answer size), the raw ``UPDATE`` of the same rows
(rolled back: the reference), create (the POST's service), the run to its end by one
worker in this process (its slices one after the other), the operation data it stored
per million sessions, its undo (created and run the same way), and an export of every
live session (rows/s). With real processes and several workers: ``benchmarks.large.workers``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.db import connection

from benchmarks.large.table import (
    CLOSE_FILTER,
    bench_user,
    ensure_table,
    raw_update,
    timed,
)
from benchmarks.report import machine_facts, rounded
from bulkops.engine import (
    Selection,
    operation_create,
    operation_execute,
    operation_undo,
    operation_validate,
)
from bulkops.exports.storage import export_path
from bulkops.models import (
    BulkOperation,
    BulkOperationItem,
    OperationChunk,
    OperationSlice,
    Session,
)


def _relation_bytes(model) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [model._meta.db_table])
        return int(cursor.fetchone()[0])


#: Every table an operation's data is kept in (a large one's chunk rows included).
STORED = (BulkOperation, BulkOperationItem, OperationChunk, OperationSlice)


def _stored_bytes() -> int:
    return sum(_relation_bytes(m) for m in STORED)


class LargeBench:
    """Seed (if needed) to ``size`` sessions, then measure one large close, its undo
    and a large export."""

    def __init__(self, *, size: int, progress: Callable[[str], None]) -> None:
        self.size = size
        self.progress = progress

    def run_operation(self, op: BulkOperation) -> dict[str, Any]:
        _, seconds = timed(lambda: operation_execute(operation_id=op.pk))
        op.refresh_from_db()
        return {
            "status": op.status,
            "sessions": op.processed,
            "seconds": rounded(seconds, 2),
            "sessions_per_second": op.processed / seconds if seconds else None,
        }

    def run(self) -> dict[str, Any]:
        if connection.vendor != "postgresql":
            raise RuntimeError("--large needs PostgreSQL (large operations run on it only).")
        seeded = ensure_table(self.size, self.progress)
        user = bench_user()
        selection = Selection(filter=CLOSE_FILTER)
        self.progress("validate")
        result, validate_s = timed(
            lambda: operation_validate(user=user, action="close", selection=selection)
        )
        answer = json.dumps(result.as_dict(), default=str).encode()
        self.progress("raw UPDATE (rolled back)")
        raw = raw_update()
        before = _stored_bytes()
        self.progress("create")
        started, create_s = timed(
            lambda: operation_create(user=user, action="close", selection=selection)
        )
        self.progress(f"run: close of {started.operation.total:,} sessions")
        close = self.run_operation(started.operation)
        stored = _stored_bytes() - before
        self.progress("undo")
        undo, undo_create_s = timed(lambda: operation_undo(operation=started.operation, user=user))
        undo_run = self.run_operation(undo.operation)
        self.progress("export")
        export = operation_create(
            user=user, action="export", selection=Selection(filter={}), params={"format": "csv"}
        ).operation
        export_run = self.run_operation(export)
        export.refresh_from_db()
        file_bytes = export_path(export.export_file).stat().st_size
        export_path(export.export_file).unlink()
        million = 1_000_000 / max(close["sessions"], 1)
        return {
            "machine": machine_facts(),
            "sessions": Session.objects.count(),
            "seed_seconds": rounded(seeded, 1),
            "validate": {
                "seconds": rounded(validate_s, 3),
                "bytes": len(answer),
                "eligible": result.as_dict()["eligible_count"],
            },
            "raw_update": raw,
            "create_seconds": rounded(create_s, 3),
            "close": close,
            "close_vs_raw": close["sessions_per_second"] / raw["rows_per_second"],
            "stored_mb_per_million": rounded(stored * million / 1e6, 1),
            "undo": {"create_seconds": rounded(undo_create_s, 3), **undo_run},
            "export": {**export_run, "file_mb": rounded(file_bytes / 1e6, 1)},
        }


def render_large(data: dict[str, Any]) -> str:
    rate = "{:,.0f}/s".format
    close, raw, undo, export = data["close"], data["raw_update"], data["undo"], data["export"]
    rows = [
        ("sessions in the table", f"{data['sessions']:,}"),
        (
            "validate, close status=active",
            f"{data['validate']['seconds']} s, {data['validate']['bytes'] / 1000:.1f} KB "
            f"({data['validate']['eligible']:,} eligible)",
        ),
        ("raw UPDATE (rolled back)", f"{raw['seconds']} s, {rate(raw['rows_per_second'])}"),
        ("create (POST's service)", f"{data['create_seconds']} s"),
        (
            "close, 1 worker in process",
            f"{close['seconds']} s, {rate(close['sessions_per_second'])} ({close['status']})",
        ),
        ("close vs raw UPDATE", f"{data['close_vs_raw']:.2f}×"),
        ("operation data per million sessions", f"{data['stored_mb_per_million']} MB"),
        (
            "undo: create; run",
            f"{undo['create_seconds']} s; {undo['seconds']} s, {rate(undo['sessions_per_second'])}",
        ),
        (
            "export CSV (gzip), every live session",
            f"{export['seconds']} s, {rate(export['sessions_per_second'])}, {export['file_mb']} MB",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
