"""The two references each engine figure is compared with.

* **naive** — what a per-row service does: fetch each session, change it, ``save()``
  (the caller times it in one transaction for the whole batch, which flatters it).
* **raw** — the SQL limit: one ``UPDATE … WHERE id = ANY(%s)`` / ``DELETE`` per table,
  ``COPY (SELECT …) TO STDOUT`` for export on PostgreSQL; on SQLite the same single
  statements with ``IN (…)``. Archive has no pure-SQL form (zstandard runs in Python):
  its raw limit is one SELECT, compression, and one UPDATE from arrays/VALUES.
"""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from benchmarks.scenarios import EXPORT_TABLE, SESSION_TABLE, Scenario
from bulkops.actions.archive import ARCHIVE_SET_SQL, compress_content, compress_rows
from bulkops.actions.export import FIELDS, neutralise
from bulkops.models import Session, SessionStatus

EXPORT_KEYS = ("id", "title", "status", "owner", "created_at", "updated_at")


# --- naive: one row at a time ---------------------------------------------------------------
def _naive_close(session: Session, now: datetime.datetime) -> None:
    if session.deleted_at is None:
        session.status, session.closed_at = SessionStatus.CLOSED, now
        session.save()


def _naive_soft_delete(session: Session, now: datetime.datetime) -> None:
    if session.deleted_at is None:
        session.deleted_at = now
        session.save()


def _naive_restore(session: Session, now: datetime.datetime) -> None:
    if session.deleted_at is not None:
        session.deleted_at = None
        session.save()


def _naive_archive(session: Session, now: datetime.datetime) -> None:
    if session.deleted_at is None:
        blob, size = compress_content(session.content)
        session.archive_blob, session.archive_original_size = blob, size
        session.archive_compressed_size = len(blob)
        session.content, session.status = "", SessionStatus.ARCHIVED
        session.archived_at = now
        session.save()


def _naive_hard_delete(session: Session, now: datetime.datetime) -> None:
    session.exports.all().delete()
    session.delete()


NAIVE_CHANGES: dict[str, Callable[[Session, datetime.datetime], None]] = {
    "close": _naive_close,
    "soft_delete": _naive_soft_delete,
    "restore": _naive_restore,
    "archive": _naive_archive,
    "hard_delete": _naive_hard_delete,
}


def naive(scenario: Scenario, ids: list[str], *, owner, export_dir: Path) -> None:
    """Fetch each session, check it, change it, save() it — one row at a time."""
    if scenario.is_export:
        _naive_export(scenario, ids, owner=owner, export_dir=export_dir)
        return
    change = NAIVE_CHANGES[scenario.name]
    now = timezone.now()
    for sid in ids:
        session = Session.objects.get(pk=sid, owner=owner)
        if session.status == SessionStatus.PROCESSING:
            continue
        change(session, now)


def _naive_export(scenario: Scenario, ids: list[str], *, owner, export_dir: Path) -> None:
    is_csv = scenario.params["format"] == "csv"
    path = export_dir / f"naive.{scenario.params['format']}"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        if is_csv:
            writer.writerow(FIELDS)
        for sid in ids:
            s = Session.objects.select_related("owner").get(pk=sid, owner=owner)
            if s.deleted_at is not None:
                continue
            record = [
                s.id,
                s.title,
                s.status,
                s.owner.username,
                s.created_at.isoformat(),
                s.updated_at.isoformat(),
                s.metadata,
            ]
            if is_csv:
                record[-1] = json.dumps(record[-1], sort_keys=True)
                writer.writerow([neutralise(str(v)) for v in record])
            else:
                fh.write(json.dumps(dict(zip(FIELDS, record, strict=True))) + ",\n")
    path.unlink()


# --- raw: one statement per table -------------------------------------------------------------
@dataclass(frozen=True)
class _Statement:
    """What every raw statement of one run shares: the id condition and the timestamp."""

    cursor: Any
    where: str
    ids: list[Any]
    stamp: Any
    pg: bool


def _raw_close(st: _Statement) -> None:
    st.cursor.execute(
        f"UPDATE {SESSION_TABLE} SET status = %s, closed_at = %s, updated_at = %s WHERE {st.where}",
        [SessionStatus.CLOSED, st.stamp, st.stamp, *st.ids],
    )


def _raw_soft_delete(st: _Statement) -> None:
    st.cursor.execute(
        f"UPDATE {SESSION_TABLE} SET deleted_at = %s, updated_at = %s WHERE {st.where}",
        [st.stamp, st.stamp, *st.ids],
    )


def _raw_restore(st: _Statement) -> None:
    st.cursor.execute(
        f"UPDATE {SESSION_TABLE} SET deleted_at = NULL, updated_at = %s WHERE {st.where}",
        [st.stamp, *st.ids],
    )


def _raw_hard_delete(st: _Statement) -> None:
    export_where = st.where.replace("id", "session_id", 1)
    st.cursor.execute(f"DELETE FROM {EXPORT_TABLE} WHERE {export_where}", st.ids)
    st.cursor.execute(f"DELETE FROM {SESSION_TABLE} WHERE {st.where}", st.ids)


def _raw_archive(st: _Statement) -> None:
    st.cursor.execute(f"SELECT id, content FROM {SESSION_TABLE} WHERE {st.where}", st.ids)
    ids, blobs, osizes, csizes = compress_rows(st.cursor.fetchall())
    sets = ARCHIVE_SET_SQL
    head = [SessionStatus.ARCHIVED, st.stamp, st.stamp]
    if st.pg:
        st.cursor.execute(
            f"UPDATE {SESSION_TABLE} AS s SET {sets} FROM unnest(%s::text[], "
            "%s::bytea[], %s::bigint[], %s::bigint[]) AS v(id, blob, osize, csize) "
            "WHERE s.id = v.id",
            [*head, ids, blobs, osizes, csizes],
        )
        return
    values = ", ".join(["(%s, %s, %s, %s)"] * len(ids))
    params = [x for row in zip(ids, blobs, osizes, csizes, strict=True) for x in row]
    st.cursor.execute(
        f"WITH v(id, blob, osize, csize) AS (VALUES {values}) UPDATE {SESSION_TABLE} "
        f"SET {sets} FROM v WHERE {SESSION_TABLE}.id = v.id",
        [*params, *head],
    )


RAW_CHANGES: dict[str, Callable[[_Statement], None]] = {
    "close": _raw_close,
    "soft_delete": _raw_soft_delete,
    "restore": _raw_restore,
    "hard_delete": _raw_hard_delete,
    "archive": _raw_archive,
}


def raw(scenario: Scenario, ids: list[str], *, export_dir: Path) -> None:
    """The same change as one statement per table (the SQL limit)."""
    pg = connection.vendor == "postgresql"
    where = "id = ANY(%s)" if pg else f"id IN ({', '.join(['%s'] * len(ids))})"
    id_params: list[Any] = [ids] if pg else list(ids)
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        st = _Statement(cursor=cursor, where=where, ids=id_params, stamp=stamp, pg=pg)
        if scenario.is_export:
            fmt = scenario.params["format"]
            _raw_export(st, fmt, export_dir / f"raw.{fmt}")
        else:
            RAW_CHANGES[scenario.name](st)


def _raw_export(st: _Statement, fmt: str, path: Path) -> None:
    user_table = get_user_model()._meta.db_table
    where = st.where.replace("id", "s.id", 1)
    select = (
        f"FROM {SESSION_TABLE} s JOIN {user_table} u ON u.id = s.owner_id "
        f"WHERE {where} AND s.deleted_at IS NULL ORDER BY s.id"
    )
    if st.pg:
        _copy_export(st, fmt, select, path)
    else:
        _select_export(st, fmt, select, path)
    path.unlink()


def _copy_export(st: _Statement, fmt: str, select: str, path: Path) -> None:
    """PostgreSQL: the database writes the CSV or one JSON object per line (COPY)."""
    if fmt == "csv":
        sql = (
            "COPY (SELECT s.id, s.title, s.status, u.username, s.created_at, "
            f"s.updated_at, s.metadata {select}) TO STDOUT WITH (FORMAT csv, HEADER)"
        )
    else:
        sql = (
            "COPY (SELECT json_build_object('id', s.id, 'title', s.title, 'status', "
            "s.status, 'owner', u.username, 'created_at', s.created_at, 'updated_at', "
            f"s.updated_at, 'metadata', s.metadata) {select}) TO STDOUT"
        )
    with open(path, "wb") as fh, st.cursor.cursor.copy(sql, st.ids) as copy:
        for data in copy:
            fh.write(data)


def _select_export(st: _Statement, fmt: str, select: str, path: Path) -> None:
    """Elsewhere: one SELECT, written by the csv/json modules."""
    st.cursor.execute(
        "SELECT s.id, s.title, s.status, u.username, s.created_at, s.updated_at, "
        f"s.metadata {select}",
        st.ids,
    )
    with open(path, "w", encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            writer = csv.writer(fh)
            writer.writerow(list(EXPORT_KEYS))
            writer.writerows(st.cursor.fetchall())
            return
        for row in st.cursor.fetchall():
            record = dict(zip(EXPORT_KEYS, row[:6], strict=True))
            record["metadata"] = json.loads(row[6])
            fh.write(json.dumps(record, default=str) + "\n")
