"""archive: content compressed (zstandard) into the archive blob, content emptied.

Lossless: ``decompress_content(session.archive_blob)`` gives back the exact text.
"""

import datetime
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


#: The SET clause of archive's one UPDATE per chunk, joined to ``v(<ctid or id>, blob,
#: osize, csize)``; parameters: status, archived_at, updated_at.
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

    #: The content is read by the chunk's locking read (``apply_rows``).
    apply_columns = ("content",)

    def apply(self, *, ids, operation, now) -> None:
        if not ids:
            return
        rows = Session.objects.filter(AnyOf("pk", ids)).order_by().values_list("id", "content")
        write_archived(compress_rows(rows), tids=None, now=now)

    def apply_rows(self, *, rows, operation, now) -> None:
        """The eligible rows as the chunk locked them, their content with them: each one
        compressed and written back by its ctid (no second read, no index lookup)."""
        if not rows:
            return
        compressed = compress_rows((row.id, row.extra[0]) for row in rows)
        tids = [row.tid for row in rows]
        write_archived(compressed, tids=tids if None not in tids else None, now=now)


def archive_update_sql(*, by_tid: bool) -> str:
    """PostgreSQL's one ``UPDATE`` per chunk: every row its own blob, from four arrays
    (the rows' ctids, or ids; blobs; original and compressed sizes). By ctid, each row
    is found by a TID scan of the version the chunk locked; by id, through the key."""
    key, cast = ("ctid", "tid") if by_tid else ("id", "text")
    return (
        f'UPDATE "{Session._meta.db_table}" AS s SET {ARCHIVE_SET_SQL} FROM '
        f"unnest(%s::{cast}[], %b::bytea[], %s::bigint[], %s::bigint[]) "
        f"AS v(key, blob, osize, csize) WHERE s.{key} = v.key"
    )


def write_archived(
    compressed: tuple[list[str], list[bytes], list[int], list[int]],
    *,
    tids: list[str] | None,
    now: datetime.datetime,
) -> None:
    """Write ``compress_rows``' output back in one statement per chunk (Django's
    bulk_update builds a CASE per column instead): by the rows' ``tids`` when given
    (PostgreSQL, rows this transaction locked), else by id."""
    sids, blobs, osizes, csizes = compressed
    if not sids:
        return
    table = Session._meta.db_table
    if is_postgresql():
        # Four array parameters, bound server-side with the blobs in binary: Django's
        # client-side binding would send each blob as hex text inside the SQL
        # (twice the bytes, and ~40% of this chunk's CPU; docs/benchmarks.md).
        import psycopg

        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                archive_update_sql(by_tid=tids is not None),
                [SessionStatus.ARCHIVED, now, now, tids or sids, blobs, osizes, csizes],
            )
        return
    rows_sql = ", ".join(["(%s, %s, %s, %s)"] * len(sids))
    params: list = [v for row in zip(sids, blobs, osizes, csizes, strict=True) for v in row]
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f'WITH v(id, blob, osize, csize) AS (VALUES {rows_sql}) UPDATE "{table}" '
            f'SET {ARCHIVE_SET_SQL} FROM v WHERE "{table}".id = v.id',
            [*params, SessionStatus.ARCHIVED, stamp, stamp],
        )
