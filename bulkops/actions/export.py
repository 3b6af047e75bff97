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
from typing import Any

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

    def _records(self, ids: list[str]) -> list[dict[str, Any]]:
        details = bool(self.params.get("include_details"))
        # One array parameter and tuples, not one placeholder per id and a dict per row:
        # this loop is most of an export's CPU (docs/benchmarks.md).
        qs = Session.objects.filter(AnyOf("pk", ids)).order_by("id")
        columns = [
            "id",
            "title",
            "status",
            "owner__username",
            "created_at",
            "updated_at",
            "metadata",
        ]
        if details:
            qs = qs.annotate(exports_count=Count("exports"))
            columns += [
                "content",
                "archive_original_size",
                "exports_count",
                "closed_at",
                "archived_at",
                "deleted_at",
            ]
        records = []
        append = records.append
        for row in qs.values_list(*columns):
            record = {
                "id": row[0],
                "title": row[1],
                "status": row[2],
                "owner": row[3],
                "created_at": _iso(row[4]),
                "updated_at": _iso(row[5]),
                "metadata": row[6],
            }
            if details:
                content, size, exports_count, closed_at, archived_at, deleted_at = row[7:]
                record["content_size"] = size if size is not None else len(content.encode("utf-8"))
                record["exports_count"] = exports_count
                record["closed_at"] = _iso(closed_at)
                record["archived_at"] = _iso(archived_at)
                record["deleted_at"] = _iso(deleted_at)
            append(record)
        return records

    def apply(self, *, ids, operation, now) -> None:
        if not ids:
            return
        records = self._records(ids)
        with open(self._part_path(operation), "a", encoding="utf-8", newline="") as fh:
            if self.params["format"] == ExportFormat.CSV:
                cell = self._csv_cell
                fields = self.fields
                csv.writer(fh).writerows([cell(r[f]) for f in fields] for r in records)
            else:
                dumps = json.dumps
                lines = [dumps(record, ensure_ascii=False) for record in records]
                if lines:
                    fh.write((",\n" if self._count else "\n") + ",\n".join(lines))
                    self._count += len(lines)
            fh.flush()
            os.fsync(fh.fileno())

    @staticmethod
    def _csv_cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return neutralise(str(value))

    def finish(self, operation) -> None:
        part = self._part_path(operation)
        if self.params["format"] == ExportFormat.JSON:
            with open(part, "a", encoding="utf-8") as fh:
                fh.write("\n]\n" if self._count else "]\n")
        os.replace(part, export_path(operation.export_file))

    def abort(self, operation) -> None:
        self._part_path(operation).unlink(missing_ok=True)
