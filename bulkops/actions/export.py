"""export: one CSV or JSON file with one record per session (read-only).

The file is streamed chunk by chunk to ``<name>.part`` and renamed into place only when
complete, so a download never sees half a file. Processing and archived sessions are
exported too; deleted ones are not.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from django.db.models import Count

from bulkops.actions import reasons
from bulkops.actions.base import BulkAction, Param, SessionRow
from bulkops.actions.registry import register
from bulkops.actions.sql import AnyOf
from bulkops.conf import bulkops_settings
from bulkops.models import ExportFormat, Session

FIELDS = ["id", "title", "status", "owner", "created_at", "updated_at", "metadata"]
DETAIL_FIELDS = [
    "content_size",
    "exports_count",
    "closed_at",
    "archived_at",
    "deleted_at",
]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FILENAME_TEMPLATE = "session_export_{date:%Y%m%d}_{operation_id}.{ext}"


def export_dir() -> Path:
    return Path(bulkops_settings.EXPORT_DIR)


def export_path(filename: str) -> Path:
    return export_dir() / filename


def neutralise(value: str) -> str:
    """Defuse CSV formula injection: a cell a spreadsheet would run becomes text."""
    if value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _csv_row(row: tuple) -> tuple:
    """A tuple of ``_tuples`` as CSV cells. Only free text can start a formula: title
    (1), owner (3) and metadata (6); ids, statuses, timestamps and numbers cannot."""
    metadata = json.dumps(row[6], ensure_ascii=False, sort_keys=True)
    return (
        row[0],
        neutralise(row[1]),
        row[2],
        neutralise(row[3]),
        row[4],
        row[5],
        neutralise(metadata),
        *("" if cell is None else cell for cell in row[7:]),
    )


@register
class ExportAction(BulkAction):
    action_type = "export"
    display_name = "Export"
    permission = "bulkops.view_session"
    result_status = "exported"
    read_only = True
    params_spec = {
        "format": Param(default=ExportFormat.CSV.value, choices=tuple(ExportFormat.values)),
        "include_details": Param(default=False),
    }
    sessions_per_second = 50_000.0

    @property
    def max_sessions(self) -> int:
        return bulkops_settings.MAX_EXPORT_SESSIONS

    @property
    def fields(self) -> list[str]:
        return FIELDS + DETAIL_FIELDS if self.params.get("include_details") else FIELDS

    def check(self, row: SessionRow) -> str | None:
        if row.deleted_at is not None:
            return reasons.DELETED
        return None

    # --- the file ---------------------------------------------------------------------
    def _part_path(self, operation) -> Path:
        return export_path(operation.export_file + ".part")

    def begin(self, operation) -> None:
        """Start the file afresh: an export is read-only, so a resumed one starts over."""
        export_dir().mkdir(parents=True, exist_ok=True)
        self._count = 0
        with open(self._part_path(operation), "w", encoding="utf-8", newline="") as fh:
            if self.params["format"] == ExportFormat.CSV:
                csv.writer(fh).writerow(self.fields)
            else:
                fh.write("[")

    def _tuples(self, ids: list[str]) -> list[tuple]:
        """One tuple per session in ``self.fields`` order, timestamps as ISO 8601 text."""
        details = bool(self.params.get("include_details"))
        # One array parameter and tuples, not one placeholder per id and a dict per row:
        # this loop is most of an export's CPU (docs/benchmarks.md).
        qs = Session.objects.filter(AnyOf("pk", ids)).order_by("id")
        columns = ["id", "title", "status", "owner__username", "created_at", "updated_at",
                   "metadata"]  # fmt: skip
        if not details:
            return [
                (sid, title, status, owner, created.isoformat(), updated.isoformat(), metadata)
                for sid, title, status, owner, created, updated, metadata in qs.values_list(
                    *columns
                )
            ]
        qs = qs.annotate(exports_count=Count("exports"))
        columns += ["content", "archive_original_size", "exports_count", "closed_at",
                    "archived_at", "deleted_at"]  # fmt: skip
        return [
            (
                *row[:4],
                row[4].isoformat(),
                row[5].isoformat(),
                row[6],
                row[8] if row[8] is not None else len(row[7].encode("utf-8")),
                row[9],
                _iso(row[10]),
                _iso(row[11]),
                _iso(row[12]),
            )
            for row in qs.values_list(*columns)
        ]

    def apply(self, *, ids, operation, now) -> None:
        if not ids:
            return
        rows = self._tuples(ids)
        with open(self._part_path(operation), "a", encoding="utf-8", newline="") as fh:
            if self.params["format"] == ExportFormat.CSV:
                csv.writer(fh).writerows(_csv_row(row) for row in rows)
            else:
                dumps, fields = json.dumps, self.fields
                lines = [
                    dumps(dict(zip(fields, row, strict=True)), ensure_ascii=False) for row in rows
                ]
                if lines:
                    fh.write((",\n" if self._count else "\n") + ",\n".join(lines))
                    self._count += len(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def finish(self, operation) -> None:
        part = self._part_path(operation)
        if self.params["format"] == ExportFormat.JSON:
            with open(part, "a", encoding="utf-8") as fh:
                fh.write("\n]\n" if self._count else "]\n")
        os.replace(part, export_path(operation.export_file))

    def abort(self, operation) -> None:
        self._part_path(operation).unlink(missing_ok=True)
