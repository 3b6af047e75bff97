"""archive: content compressed (zstandard) into the archive blob, content emptied.

Lossless: ``decompress_content(session.archive_blob)`` gives back the exact text.
"""

import zstandard
from django.db import connection

from bulkops.actions import reasons
from bulkops.actions.base import BulkAction, Param, SessionRow
from bulkops.actions.registry import register
from bulkops.conf import bulkops_settings
from bulkops.models import Session, SessionStatus


def compress_content(text: str, *, level: int | None = None) -> tuple[bytes, int]:
    """Return (zstd frame, original size in bytes) for ``text`` encoded as UTF-8."""
    raw = text.encode("utf-8")
    level = level if level is not None else bulkops_settings.ARCHIVE_ZSTD_LEVEL
    return zstandard.ZstdCompressor(level=level).compress(raw), len(raw)


def decompress_content(blob: bytes | memoryview) -> str:
    """Return the exact text an archive blob was made from."""
    return zstandard.ZstdDecompressor().decompress(bytes(blob)).decode("utf-8")


@register
class ArchiveAction(BulkAction):
    action_type = "archive"
    display_name = "Archive"
    permission = "bulkops.change_session"
    skip_reasons = frozenset({reasons.ALREADY_ARCHIVED})
    result_status = SessionStatus.ARCHIVED
    params_spec = {"atomic": Param(default=False)}
    sessions_per_second = 10_000.0

    def check(self, row: SessionRow) -> str | None:
        if row.deleted_at is not None:
            return reasons.DELETED
        if row.status == SessionStatus.PROCESSING:
            return reasons.PROCESSING
        if row.status == SessionStatus.ARCHIVED:
            return reasons.ALREADY_ARCHIVED
        return None

    def apply(self, *, ids, operation, now) -> None:
        if not ids:
            return
        level = bulkops_settings.ARCHIVE_ZSTD_LEVEL
        compressor = zstandard.ZstdCompressor(level=level)
        values = []
        for session_id, content in Session.objects.filter(pk__in=ids).values_list("id", "content"):
            raw = content.encode("utf-8")
            blob = compressor.compress(raw)
            values.append((session_id, blob, len(raw), len(blob)))
        table = Session._meta.db_table
        # One UPDATE … FROM (VALUES …) per chunk: every row gets its own blob in a
        # single statement (Django's bulk_update builds a CASE per column instead).
        rows_sql = ", ".join(["(%s, %s, %s, %s)"] * len(values))
        params: list = [v for row in values for v in row]
        if connection.vendor == "postgresql":
            sql = (
                f"UPDATE \"{table}\" AS s SET content = '', status = %s, archived_at = %s, "
                "updated_at = %s, archive_blob = v.blob, archive_original_size = v.osize, "
                "archive_compressed_size = v.csize "
                f"FROM (VALUES {rows_sql}) AS v(id, blob, osize, csize) WHERE s.id = v.id"
            )
            sql = sql.replace("(%s, %s, %s, %s)", "(%s, %s::bytea, %s::bigint, %s::bigint)")
        else:
            sql = (
                f'WITH v(id, blob, osize, csize) AS (VALUES {rows_sql}) UPDATE "{table}" '
                "SET content = '', status = %s, archived_at = %s, updated_at = %s, "
                "archive_blob = v.blob, archive_original_size = v.osize, "
                "archive_compressed_size = v.csize FROM v "
                f'WHERE "{table}".id = v.id'
            )
        stamp = connection.ops.adapt_datetimefield_value(now)
        head = [SessionStatus.ARCHIVED, stamp, stamp]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(sql, head + params)
            else:
                cursor.execute(sql, params + head)
