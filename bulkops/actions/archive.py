"""archive: content compressed (zstandard) into the archive blob, content emptied.

Lossless: ``decompress_content(session.archive_blob)`` gives back the exact text.
"""

from collections.abc import Iterable

import zstandard
from django.db import connection

from bulkops.actions import reasons
from bulkops.actions.base import ATOMIC, BulkAction, Exposure, SessionRow
from bulkops.actions.registry import register
from bulkops.actions.sql import AnyOf, is_postgresql
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


#: The SET clause of archive's one UPDATE per chunk, joined to ``v(id, blob, osize,
#: csize)``; parameters: status, archived_at, updated_at.
ARCHIVE_SET_SQL = (
    "content = '', status = %s, archived_at = %s, updated_at = %s, "
    "archive_blob = v.blob, archive_original_size = v.osize, "
    "archive_compressed_size = v.csize"
)


def compress_rows(
    rows: Iterable[tuple[str, str]], *, level: int | None = None
) -> tuple[list[str], list[bytes], list[int], list[int]]:
    """Compress ``(id, content)`` rows with one compressor: (ids, blobs, original sizes,
    compressed sizes), sizes in bytes."""
    level = level if level is not None else bulkops_settings.ARCHIVE_ZSTD_LEVEL
    compressor = zstandard.ZstdCompressor(level=level)
    ids: list[str] = []
    blobs: list[bytes] = []
    osizes: list[int] = []
    csizes: list[int] = []
    for session_id, content in rows:
        raw = content.encode("utf-8")
        blob = compressor.compress(raw)
        ids.append(session_id)
        blobs.append(blob)
        osizes.append(len(raw))
        csizes.append(len(blob))
    return ids, blobs, osizes, csizes


@register
class ArchiveAction(BulkAction):
    action_type = "archive"
    display_name = "Archive"
    permission = "bulkops.change_session"
    skip_reasons = frozenset({reasons.ALREADY_ARCHIVED})
    result_status = SessionStatus.ARCHIVED
    params_spec = {"atomic": ATOMIC}
    rate_limit = "15/m"
    exposure = Exposure(sessions_per_second=10_000.0)

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
        sids, blobs, osizes, csizes = compress_rows(
            Session.objects.filter(AnyOf("pk", ids)).order_by().values_list("id", "content")
        )
        # One statement per chunk: every row gets its own blob (Django's bulk_update
        # builds a CASE per column instead).
        sets = ARCHIVE_SET_SQL
        table = Session._meta.db_table
        if is_postgresql():
            # Four array parameters, bound server-side with the blobs in binary: Django's
            # client-side binding would send each blob as hex text inside the SQL
            # (twice the bytes, and ~40% of this chunk's CPU; docs/benchmarks.md).
            import psycopg

            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(
                    f'UPDATE "{table}" AS s SET {sets} FROM unnest(%s::text[], %b::bytea[], '
                    "%s::bigint[], %s::bigint[]) AS v(id, blob, osize, csize) "
                    "WHERE s.id = v.id",
                    [SessionStatus.ARCHIVED, now, now, sids, blobs, osizes, csizes],
                )
            return
        rows_sql = ", ".join(["(%s, %s, %s, %s)"] * len(sids))
        params: list = [v for row in zip(sids, blobs, osizes, csizes, strict=True) for v in row]
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.execute(
                f'WITH v(id, blob, osize, csize) AS (VALUES {rows_sql}) UPDATE "{table}" '
                f'SET {sets} FROM v WHERE "{table}".id = v.id',
                [*params, SessionStatus.ARCHIVED, stamp, stamp],
            )
