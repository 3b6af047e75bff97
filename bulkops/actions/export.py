"""export: one CSV or JSON file with one record per session (read-only).

What goes in the file is decided here; where it is kept, how it is written chunk by
chunk and renamed into place when complete, and when it expires is
``bulkops.exports.storage``'s. Processing and archived sessions are exported too;
deleted ones are not.
"""

from __future__ import annotations

import csv
import json
from typing import Any

from django.db.models import BigIntegerField, Count, F, Func, QuerySet, TextField
from django.db.models.functions import Cast, Coalesce

from bulkops.actions import reasons
from bulkops.actions.base import AdminVariant, BulkAction, Exposure, Param, SessionRow
from bulkops.actions.registry import register
from bulkops.actions.sql import AnyOf
from bulkops.conf import bulkops_settings
from bulkops.exports.storage import (
    discard_part,
    export_expiry,
    export_filename,
    open_part,
    publish_part,
    sync,
    writes_file,
)
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


def neutralise(value: str) -> str:
    """Defuse CSV formula injection: a cell a spreadsheet would run becomes text."""
    if value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class IsoText(Func):
    """A timestamp as ISO 8601 text, UTC, always with microseconds
    (``2024-01-10T09:30:00.000000+00:00``), formatted by the database."""

    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.get_source_expressions()[0])
        fmt = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
        return f"to_char({sql} AT TIME ZONE 'UTC', '{fmt}')", params

    def as_sql(self, compiler, connection, **extra_context):
        # SQLite: Django stores UTC as "YYYY-MM-DD HH:MM:SS[.ffffff]".
        sql, params = compiler.compile(self.get_source_expressions()[0])
        return (
            f"(replace({sql}, ' ', 'T') || CASE WHEN instr({sql}, '.') > 0 THEN '' "
            "ELSE '.000000' END || '+00:00')",
            params * 2,
        )


class OctetLength(Func):
    """Bytes of UTF-8 text (SQLite's length() counts characters; a blob cast counts
    bytes)."""

    function = "OCTET_LENGTH"
    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="length(CAST(%(expressions)s AS BLOB))")


def _csv_row(row: tuple) -> tuple:
    """A tuple of ``_tuples`` as CSV cells. Only free text can start a formula: title
    (1), owner (3) and metadata (6); ids, statuses, timestamps and numbers cannot."""
    metadata = row[6]
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
    produces_file = True
    params_spec = {
        "format": Param(
            default=ExportFormat.CSV.value, choices=tuple(ExportFormat.values), label="Format"
        ),
        "include_details": Param(
            default=False,
            label="Include details (content size, exports, close/archive/delete times)",
        ),
    }
    rate_limit = "30/m"
    exposure = Exposure(
        api_path="export-metadata",
        api_example={
            "session_ids": ["demo-000000", "demo-000001"],
            "format": "csv",
            "include_details": False,
        },
        admin_variants=(
            AdminVariant(
                "export_sessions_csv",
                "Export as CSV",
                {"format": "csv"},
                menu_label="Export selected sessions as CSV",
            ),
            AdminVariant(
                "export_sessions_json",
                "Export as JSON",
                {"format": "json"},
                menu_label="Export selected sessions as JSON",
            ),
        ),
        sessions_per_second=50_000.0,
    )

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

    @classmethod
    def label(cls, params: dict[str, Any]) -> str:
        return f"Export ({str(params.get('format', 'csv')).upper()})"

    # --- what the operation shows ------------------------------------------------------
    def prepare(self, operation) -> None:
        operation.export_file = export_filename(
            created_at=operation.created_at, operation_id=operation.id, ext=self.params["format"]
        )
        operation.expires_at = export_expiry(operation.created_at)

    def accepted(self, operation) -> dict[str, Any]:
        return {
            "metadata": {
                "format": operation.params.get("format"),
                "expires_at": operation.expires_at.isoformat() if operation.expires_at else None,
            },
        }

    # --- the file ---------------------------------------------------------------------
    @writes_file
    def begin(self, operation) -> None:
        """Start the file afresh: an export is read-only, so a resumed one starts over."""
        self._count = 0
        with open_part(operation.export_file, fresh=True) as fh:
            if self.params["format"] == ExportFormat.CSV:
                csv.writer(fh).writerow(self.fields)
            else:
                fh.write("[")

    def _tuples(self, ids: list[str]) -> list[tuple]:
        """One tuple per session in ``self.fields`` order. The database formats the
        timestamps as ISO 8601 text and hands over metadata as JSON text: parsing them
        into Python objects only to print them again was most of an export's CPU."""
        return list(self.records(Session.objects.filter(AnyOf("pk", ids))))

    def records(self, sessions: QuerySet[Session], *, leading: tuple = ()) -> QuerySet:
        """``sessions`` in id order as ``_tuples``' rows (a ``values_list``): what a
        large export streams from the database with ``COPY``, each row then led by the
        ``leading`` expressions."""
        details = bool(self.params.get("include_details"))
        qs = sessions.order_by("id")
        columns = {
            "sid": F("id"),
            "t": F("title"),
            "s": F("status"),
            "o": F("owner__username"),
            "c": IsoText("created_at"),
            "u": IsoText("updated_at"),
            "m": Cast("metadata", TextField()),
        }
        if details:
            qs = qs.annotate(exports_count=Count("exports"))
            columns |= {
                "size": Coalesce("archive_original_size", OctetLength("content")),
                "n": F("exports_count"),
                "cl": IsoText("closed_at"),
                "ar": IsoText("archived_at"),
                "de": IsoText("deleted_at"),
            }
        return qs.values_list(*leading, *columns.values())

    @writes_file
    def apply(self, *, ids, operation, now) -> None:
        if not ids:
            return
        rows = self._tuples(ids)
        with open_part(operation.export_file, fresh=False) as fh:
            if self.params["format"] == ExportFormat.CSV:
                csv.writer(fh).writerows(_csv_row(row) for row in rows)
            else:
                # The metadata is already JSON text from the database: the rest of the
                # record is encoded and the metadata spliced in as the last member.
                dumps = json.dumps
                others = [f for f in self.fields if f != "metadata"]
                lines = [
                    dumps(dict(zip(others, (*row[:6], *row[7:]), strict=True)),
                          ensure_ascii=False)[:-1]
                    + ', "metadata": '
                    + row[6]
                    + "}"
                    for row in rows
                ]  # fmt: skip
                if lines:
                    fh.write((",\n" if self._count else "\n") + ",\n".join(lines))
                    self._count += len(lines)
            sync(fh)

    @writes_file
    def finish(self, operation) -> None:
        if self.params["format"] == ExportFormat.JSON:
            with open_part(operation.export_file, fresh=False) as fh:
                fh.write("\n]\n" if self._count else "]\n")
        publish_part(operation.export_file)

    def abort(self, operation) -> None:
        discard_part(operation.export_file)
