"""A large export: its file streamed from the database into gzip.

A large operation's export runs in one slice of chunks as any large operation does
(claims, progress, pause, cancel, items), with two differences. Its chunks are large
(``EXPORT_CHUNK_ROWS``) and lock nothing: an export changes no session. And each
chunk's sessions are read by the one ``COPY (SELECT …) TO STDOUT`` that writes their
records — the next matching sessions of the slice, as a keyset read takes them; the
database formats every cell, nothing is parsed into Python objects but each row's
leading id and status, which the chunk row keeps — compressed on a thread while the
rows stream, and appended to ``<name>.part`` as one more gzip member (a file of
several members is one valid gzip stream), which is renamed into place when the run
completes. CSV
(``.csv.gz``) neutralises formula cells in the ``SELECT`` as the small export does in
Python; JSON is JSON Lines (``.jsonl.gz``), one object per line built by
``json_build_object`` (whose text escapes every control character, so a line is
never split)."""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import os
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet

from bulkops.actions import reasons
from bulkops.actions.base import BulkAction
from bulkops.actions.export import FORMULA_PREFIXES
from bulkops.actions.sql import AnyOf, in_key_order
from bulkops.engine.eligibility import Partition
from bulkops.engine.large.run import (
    Batch,
    FilterSource,
    SliceChunks,
    hold,
    insert_sorted_chunk,
)
from bulkops.exceptions import ExportFileError
from bulkops.exports.storage import export_dir, export_path
from bulkops.models import BulkOperation, ExportFormat, OperationSlice, Session

#: Fast compression: the file is written as fast as the database hands rows over.
GZIP_LEVEL = 1
#: A large export's file name ends so (``prepare`` gave ``.csv`` / ``.json``).
SUFFIXES = {ExportFormat.CSV: ".csv.gz", ExportFormat.JSON: ".jsonl.gz"}
#: The cells of ``ExportAction.records`` that hold free text (title, owner, metadata).
FREE_TEXT = (1, 3, 6)
#: COPY's CSV format with a quote and a delimiter JSON text never holds raw: each
#: row is one column, written as it is.
AS_IS = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"


def large_export_name(filename: str, fmt: str) -> str:
    """A large export's download name: ``prepare``'s with ``.csv.gz`` / ``.jsonl.gz``."""
    stem = filename.rsplit(".", 1)[0]
    return stem + SUFFIXES[ExportFormat(fmt)]


def _literal(char: str) -> str:
    """``char`` as a PostgreSQL escape-string literal (``E'\t'``)."""
    escaped = char.replace("\\", "\\\\").replace("'", "\\'")
    return "E'" + escaped.replace("\t", "\\t").replace("\r", "\\r") + "'"


def _formula_safe(column: str) -> str:
    """SQL of ``column`` neutralised as ``actions.export.neutralise`` does."""
    starts = ", ".join(_literal(char) for char in FORMULA_PREFIXES)
    return f"CASE WHEN left({column}, 1) IN ({starts}) THEN '''' || {column} ELSE {column} END"


class InRange(AnyOf):
    """``AnyOf`` for the ids of one key range, read with that range (``key_range``):
    ``id || ''`` is no index key, so PostgreSQL walks the range in the primary key and
    tests each row against the array hashed once — not one index probe per id (about
    twice as fast at 50,000 ids)."""

    def as_sql(self, compiler, connection, **extra_context):
        sql, params = super().as_sql(compiler, connection, **extra_context)
        lhs, _ = compiler.compile(self.get_source_expressions()[0])
        return sql.replace(lhs, f"({lhs} || '')", 1), params


def key_range(sessions: QuerySet[Session], ids: list[str], *, after: str) -> QuerySet[Session]:
    """Exactly ``ids`` (in id order, all past ``after``) of ``sessions``."""
    if not ids:
        return sessions.none()
    in_range = sessions.filter(pk__lte=ids[-1], **({"pk__gt": after} if after else {}))
    return in_range.filter(InRange("pk", ids))


#: What leads each row ``COPY`` writes, before the record: the session's id and status
#: and whether it is deleted — what the chunk records, from the same statement (the
#: same snapshot) as the records themselves.
LEADING = (
    F("id"),
    F("status"),
    ExpressionWrapper(Q(deleted_at__isnull=False), output_field=BooleanField()),
)


def copy_sql(
    act: BulkAction, sessions: QuerySet[Session], *, limit: int | None = None
) -> tuple[str, list[Any]]:
    """The ``COPY … TO STDOUT`` statement (and its parameters) that writes, for the
    first ``limit`` of ``sessions`` in id order, one row each: its ``LEADING`` cells,
    then its record as the file's line."""
    fields = act.fields
    records = act.records(sessions, leading=LEADING)
    inner, params = (records[:limit] if limit else records).query.sql_with_params()
    lead = [f"l{i}" for i in range(len(LEADING))]
    names = [f"c{i}" for i in range(len(fields))]
    source = f"({inner}) AS r({', '.join(lead + names)})"
    if act.params["format"] == ExportFormat.CSV:
        cells = [_formula_safe(n) if i in FREE_TEXT else n for i, n in enumerate(names)]
        select = f"SELECT {', '.join(lead + cells)} FROM {source}"
        return f"COPY ({select}) TO STDOUT (FORMAT csv)", params
    pairs = []
    for name, key in zip(names, fields, strict=True):
        value = f"{name}::json" if key == "metadata" else name
        pairs.append(f"'{key}', {value}")
    select = f"SELECT {', '.join(lead)}, json_build_object({', '.join(pairs)})::text FROM {source}"
    return f"COPY ({select}) TO STDOUT {AS_IS}", params


#: Bytes of ``COPY`` output handed to the compressing thread at a time.
COMPRESS_BLOCK = 1 << 20


class GzipMember:
    """One gzip member compressed on a thread of its own while the caller feeds it:
    ``zlib`` releases the GIL while it compresses, so the records of a chunk are
    compressed while the database still streams the next ones (not after them)."""

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        self._zip = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self._blocks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._out: list[bytes] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="export-gzip", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._blocks.get()) is not None:
            if self._error is None:
                try:
                    self._out.append(self._zip.compress(block))
                except BaseException as exc:  # handed to the caller by ``close``
                    self._error = exc

    def feed(self, block: bytes) -> None:
        self._blocks.put(block)

    def stop(self) -> None:
        """End the thread (the member is given up)."""
        self._blocks.put(None)
        self._thread.join()

    def close(self) -> bytes:
        """The whole member (header, compressed data, trailer), once all is compressed."""
        self.stop()
        if self._error is not None:
            raise self._error
        return b"".join(self._out) + self._zip.flush()


def _quoted_first(row: bytes, quote: bytes) -> tuple[bytes, bytes]:
    """A row whose first cell ``COPY`` quoted: that cell unquoted, and the rest of the
    row after its delimiter (a doubled quote is a quote in the cell)."""
    at = 1
    while True:
        end = row.index(quote, at)
        if row[end + 1 : end + 2] != quote:
            return row[1:end].replace(quote + quote, quote), row[end + 2 :]
        at = end + 2


@dataclass(frozen=True)
class Streamed:
    """What one ``COPY`` of a chunk read: every session, in the database's id order;
    the ones it left out of the file (deleted); the status of each one it wrote."""

    read: list[str]
    deleted: list[str]
    statuses: list[str]

    @property
    def written(self) -> list[str]:
        """The sessions whose records are in the file, in id order."""
        if not self.deleted:
            return self.read
        gone = set(self.deleted)
        return [sid for sid in self.read if sid not in gone]


def stream_copy(
    sql: str, params: list[Any], feed: Callable[[bytes], None], *, csv_format: bool
) -> Streamed:
    """Run ``copy_sql``'s ``COPY … TO STDOUT``: hand each record (its row without
    the ``LEADING`` cells) to ``feed`` in blocks of about ``COMPRESS_BLOCK`` bytes as
    they arrive, but a deleted session's; return what it read. ``COPY`` sends one
    message per row; the leading cells are plain (an id that needs quoting aside)."""
    sep, quote = (b",", b'"') if csv_format else (b"\x02", b"\x01")
    read: list[bytes] = []
    statuses: list[bytes] = []
    deleted: list[bytes] = []
    out = bytearray()
    # In key order, as the keyset reads (``in_key_order``): the records are the read.
    with in_key_order(), connection.cursor() as cursor, cursor.cursor.copy(sql, params) as copy:
        for block in copy:
            row = bytes(block)
            if row[:1] == quote:
                sid, row = _quoted_first(row, quote)
                status, gone, line = row.split(sep, 2)
            else:
                sid, status, gone, line = row.split(sep, 3)
            read.append(sid)
            if gone == b"t":
                deleted.append(sid)
                continue
            statuses.append(status)
            out += line
            if len(out) >= COMPRESS_BLOCK:
                feed(bytes(out))
                out.clear()
    if out:
        feed(bytes(out))
    return Streamed(_texts(read), _texts(deleted), _texts(statuses))


def _texts(values: list[bytes]) -> list[str]:
    """UTF-8 ``values`` as text, decoded at once (no text holds a NUL)."""
    return b"\0".join(values).decode().split("\0") if values else []


class GzipExport:
    """The export action of a large operation: the same action (every other attribute
    is its own), with the file written by ``COPY`` into gzip members."""

    def __init__(self, act: BulkAction) -> None:
        self.act = act

    def __getattr__(self, name: str) -> Any:
        return getattr(self.act, name)

    def _part(self, op: BulkOperation):
        return export_path(op.export_file + ".part")

    def _append(self, op: BulkOperation, member: bytes) -> None:
        """Append ``member`` (compressed) to the file, durably."""
        try:
            with open(self._part(op), "ab") as raw:
                raw.write(member)
                raw.flush()
                os.fsync(raw.fileno())
        except OSError as exc:
            raise ExportFileError(
                f"Could not write the export file: {exc.strerror or type(exc).__name__}"
            ) from exc

    def begin(self, op: BulkOperation) -> None:
        """Start the file afresh (a resumed export starts over), with the CSV header."""
        try:
            export_dir().mkdir(parents=True, exist_ok=True)
            self._part(op).write_bytes(b"")
        except OSError as exc:
            raise ExportFileError(
                f"Could not write the export file: {exc.strerror or type(exc).__name__}"
            ) from exc
        if self.act.params["format"] == ExportFormat.CSV:
            header = io.StringIO()
            csv.writer(header, lineterminator="\n").writerow(self.act.fields)
            self._append(op, gzip.compress(header.getvalue().encode(), GZIP_LEVEL))

    def write(
        self, op: BulkOperation, sessions: QuerySet[Session], *, limit: int | None = None
    ) -> Streamed:
        """Append the records of the first ``limit`` of ``sessions`` (in id order) but
        the deleted ones', as one gzip member; return what was read."""
        sql, params = copy_sql(self.act, sessions, limit=limit)
        member = GzipMember()
        try:
            csv_format = self.act.params["format"] == ExportFormat.CSV
            streamed = stream_copy(sql, params, member.feed, csv_format=csv_format)
        except BaseException:
            member.stop()
            raise
        if len(streamed.read) > len(streamed.deleted):
            self._append(op, member.close())
        else:
            member.stop()
        return streamed

    def finish(self, op: BulkOperation) -> None:
        os.replace(self._part(op), export_path(op.export_file))

    def abort(self, op: BulkOperation) -> None:
        self._part(op).unlink(missing_ok=True)


def large_file_action(op: BulkOperation, act: BulkAction) -> BulkAction:
    """``act`` as a large operation runs it: an export writes its gzip file by ``COPY``."""
    if op.is_large and act.produces_file and not isinstance(act, GzipExport):
        return GzipExport(act)  # type: ignore[return-value]
    return act


#: Sessions a large export's chunk streams: big enough that the per-chunk work (the
#: window's end, the chunk row's ``INSERT``, the counters) is small beside the
#: ``COPY``, small enough that a pause or cancel is seen within a second or so.
EXPORT_CHUNK_ROWS = 50_000


class ExportChunks(SliceChunks):
    """A large export's chunks: the next ``EXPORT_CHUNK_ROWS`` matching sessions of the
    slice, read (not locked: an export changes nothing) by the ``COPY`` that streams
    their records into the file — each row led by the session's id and status, which
    the chunk row keeps (in id order as read: no sort) — then the counters and the
    slice's cursor, in the chunk's transaction. A soft-deleted one (a ``deleted=true``
    filter) fails ``deleted``, as in a small export, and is not in the file."""

    def _stream(self, *, after: str, size: int) -> tuple[Batch, Streamed]:
        through = self.slice.through
        if isinstance(self.source, FilterSource):
            window = self.source.window(after=after, through=through, size=size)
            streamed = self.act.write(self.op, window.rows, limit=size)
            return self.source.batch(window, streamed.read, size=size), streamed
        # An earlier operation's items: those of their sessions in the selection now.
        batch = self.source.next_batch(after=after, through=through, size=size)
        if not batch.ids:
            return batch, Streamed([], [], [])
        rows = key_range(self.source.lock_scope, batch.ids, after=after)
        return batch, self.act.write(self.op, rows)

    def __call__(
        self, *, size: int, after: str, now: datetime.datetime, skip_locked: bool
    ) -> Partition:
        hold(self.slice, worker=self.worker)
        batch, streamed = self._stream(after=after, size=max(size, EXPORT_CHUNK_ROWS))
        part = Partition(eligible=streamed.written)
        if streamed.deleted:
            part.failed[reasons.DELETED] = streamed.deleted
        self.previous = streamed.statuses
        return self.record(part, batch, now)

    def insert_chunk(self, part: Partition, *, first: str, last: str) -> None:
        insert_sorted_chunk(self.op, part, previous=self.previous, first=first, last=last)


def chunks_for(
    op: BulkOperation, act: BulkAction, source, piece: OperationSlice, *, worker: str
) -> SliceChunks:
    """The chunks of ``piece`` as ``act`` runs them (an export's: ``ExportChunks``)."""
    chunks = ExportChunks if isinstance(act, GzipExport) else SliceChunks
    return chunks(op, act, source, piece, worker=worker)
