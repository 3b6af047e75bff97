"""A large export (PostgreSQL; ``engine.large.export``): one slice (it writes one file),
every matching session written once, the rows streamed out of the database with
``COPY`` into a gzip file — ``.csv.gz`` (formula cells neutralised, the same cells as a
small export's) or ``.jsonl.gz`` (one JSON object per line) — renamed into place when
complete, and downloaded by its owner only, streamed with its ``Content-Length``."""

from __future__ import annotations

import csv
import gzip
import json
import zlib

import pytest
from django.db import connection
from django.utils import timezone

from bulkops.engine import (
    Selection,
    operation_create,
    operation_execute,
    operation_pause,
    operation_resume,
)
from bulkops.engine.large.export import GzipMember, copy_sql
from bulkops.exports.storage import export_path
from bulkops.itemstore import FIELDS, item_rows
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.api import token_client
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
    pytest.mark.django_db,
]

SIZE = 3000
TRICKY = {
    "large-0000001": ('=HYPERLINK("http://x")', {"note": "@risk", "line": "a\nb"}),
    "large-0000002": ('+1, "quoted"\ttab', {"n": 1}),
    "large-0000003": ("-2\r\nnext line", {"emoji": "✓"}),
}


@pytest.fixture
def staff(make_user, owner, settings, monkeypatch):
    """3,000 sessions, exported in chunks of 700: five gzip members, one file."""
    monkeypatch.setattr("bulkops.engine.large.export.EXPORT_CHUNK_ROWS", 700)
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 100
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = 700
    seed_sessions(owner, SIZE)
    for sid, (title, metadata) in TRICKY.items():
        Session.objects.filter(pk=sid).update(title=title, metadata=metadata)
    return make_user(staff=True, perms=LARGE_PERMS)


def export(user, fmt: str, **filters):
    op = operation_create(
        user=user, action="export", selection=Selection(filter=filters), params={"format": fmt}
    ).operation
    assert op.is_large and op.slices.count() == 1
    run_worker()
    op.refresh_from_db()
    return op


def small_export_rows(user, ids: list[str]) -> list[list[str]]:
    op = operation_create(
        user=user, action="export", selection=Selection(session_ids=ids), params={"format": "csv"}
    ).operation
    run_worker()
    op.refresh_from_db()
    with open(export_path(op.export_file), newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_a_large_csv_export_is_gzip_with_every_session_once_and_the_small_exports_cells(staff):
    op = export(staff, "csv")
    assert (op.status, op.succeeded) == ("completed", SIZE)
    assert op.export_file.endswith(".csv.gz")
    assert not export_path(op.export_file + ".part").exists()
    with gzip.open(export_path(op.export_file), "rt", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "title", "status", "owner", "created_at", "updated_at", "metadata"]
    ids = [row[0] for row in rows[1:]]
    assert ids == sorted(ids) and len(set(ids)) == SIZE
    # The same cells as the small export writes, formula neutralising included.
    sample = [*TRICKY, "large-0000000", "large-0000009"]
    small = {row[0]: row for row in small_export_rows(staff, sample)[1:]}
    large = {row[0]: row for row in rows[1:] if row[0] in small}
    assert large == small
    assert large["large-0000001"][1] == '\'=HYPERLINK("http://x")'
    assert large["large-0000002"][1] == '\'+1, "quoted"\ttab'
    assert large["large-0000003"][1] == "'-2\r\nnext line"


def test_a_large_json_export_is_json_lines_in_gzip(staff):
    op = export(staff, "json", status="active")
    assert op.export_file.endswith(".jsonl.gz")
    with gzip.open(export_path(op.export_file), "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    assert len(records) == op.succeeded == Session.objects.filter(status="active").count()
    by_id = {r["id"]: r for r in records}
    assert list(by_id["large-0000001"]) == [
        "id", "title", "status", "owner", "created_at", "updated_at", "metadata"
    ]  # fmt: skip
    assert by_id["large-0000001"]["title"] == '=HYPERLINK("http://x")'  # JSON: as it is
    assert by_id["large-0000001"]["metadata"] == {"note": "@risk", "line": "a\nb"}
    assert by_id["large-0000003"]["metadata"] == {"emoji": "✓"}
    assert by_id["large-0000000"]["owner"] == "owner"


def test_details_are_exported_too(staff):
    op = operation_create(
        user=staff,
        action="export",
        selection=Selection(filter={}),
        params={"format": "json", "include_details": True},
    ).operation
    run_worker()
    op.refresh_from_db()
    with gzip.open(export_path(op.export_file), "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert first["content_size"] == 0 and first["exports_count"] == 0
    assert first["closed_at"] is None and first["deleted_at"] is None


def test_the_download_is_owner_only_streamed_with_its_length(staff, make_user):
    op = export(staff, "csv")
    path = export_path(op.export_file)
    response = token_client(staff).get(f"/api/download/{op.export_file}")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/gzip"
    assert int(response["Content-Length"]) == path.stat().st_size
    assert op.export_file in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    assert body == path.read_bytes()
    assert gzip.decompress(body).startswith(b"id,title,status")
    stranger = make_user("stranger")
    assert token_client(stranger).get(f"/api/download/{op.export_file}").status_code == 404


def gzip_members(data: bytes) -> list[bytes]:
    """The decompressed members of a gzip file, in order."""
    members = []
    while data:
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        members.append(member.decompress(data) + member.flush())
        data = member.unused_data
    return members


def test_each_chunk_is_one_gzip_member_after_the_header(staff):
    op = export(staff, "csv")
    members = gzip_members(export_path(op.export_file).read_bytes())
    assert members[0] == b"id,title,status,owner,created_at,updated_at,metadata\n"
    # 3,000 sessions in chunks of 700: five members of whole records.
    assert [m.count(b"\nlarge-") + m.startswith(b"large-") for m in members[1:]] == [
        700, 700, 700, 700, 200
    ]  # fmt: skip
    assert op.chunks.count() == 5


def test_a_chunk_reads_its_sessions_by_the_copy_and_keeps_them_in_id_order_with_their_status(
    staff, monkeypatch
):
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    copies: list[str] = []

    def recorded_copy(*args, **kwargs):
        sql, params = copy_sql(*args, **kwargs)
        copies.append(sql)
        return sql, params

    monkeypatch.setattr("bulkops.engine.large.export.copy_sql", recorded_copy)
    op = operation_create(
        user=staff, action="export", selection=Selection(filter={}), params={"format": "csv"}
    ).operation
    with connection.execute_wrapper(record):
        run_worker()
    op.refresh_from_db()
    # Per chunk: the window's end (ids only, from the index), then one COPY of the
    # next 700 matching sessions that is the read (no list of ids sent back).
    reads = [sql for sql in statements if 'FROM "bulkops_session"' in sql]
    assert len(reads) == 5 and all("LIMIT 1 OFFSET" in sql for sql in reads)
    assert len(copies) == 5
    assert all("LIMIT 700" in sql and "ANY(" not in sql for sql in copies)
    inserts = [sql for sql in statements if 'INSERT INTO "bulkops_operationchunk"' in sql]
    assert len(inserts) == 5 and not any("ORDER BY" in sql for sql in inserts)
    # The chunk rows hold every session once, in the database's id order, each with the
    # status it had (what the report and the items answer).
    chunks = list(op.chunks.order_by("first_id").values_list("session_ids", "previous_statuses"))
    ids = [sid for sids, _ in chunks for sid in sids]
    statuses = dict(Session.objects.values_list("pk", "status"))
    assert ids == list(Session.objects.order_by("pk").values_list("pk", flat=True))
    assert [s for _, previous in chunks for s in previous] == [statuses[sid] for sid in ids]
    rows = list(item_rows(operation=op, outcome=None, fields=FIELDS, batch=1000))
    assert len(rows) == op.succeeded == SIZE
    assert all(row[1] == "succeeded" and row[4] == statuses[row[0]] for row in rows)


def test_soft_deleted_sessions_fail_deleted_and_are_not_in_the_file(staff):
    Session.objects.filter(pk__lt="large-0000200").update(deleted_at=timezone.now())
    op = export(staff, "csv", deleted=True)
    assert (op.succeeded, op.failed) == (0, 200)
    with gzip.open(export_path(op.export_file), "rt", encoding="utf-8") as fh:
        assert fh.read() == "id,title,status,owner,created_at,updated_at,metadata\n"
    reasons = set(op.items.values_list("outcome", "reason"))
    assert reasons == {("failed", "deleted")}


def test_a_gzip_member_is_compressed_as_fed_and_its_thread_errors_reach_the_caller():
    member = GzipMember()
    for block in (b"a,b\n" * 1000, b"", b"c,d\n"):
        member.feed(block)
    assert gzip_members(member.close()) == [b"a,b\n" * 1000 + b"c,d\n"]
    broken = GzipMember()
    broken.feed("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        broken.close()


ODD_IDS = ('odd,"quoted" id', "odd\nline\x01\x02id")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_id_that_copy_quotes_is_exported_and_recorded_as_it_is(staff, fmt):
    # Ids the keyset alphabet never makes: COPY quotes them in the row's leading cell.
    with connection.cursor() as cursor:
        for n, odd in enumerate(ODD_IDS):
            cursor.execute(
                "UPDATE bulkops_session SET id = %s WHERE id = %s", [odd, f"large-000001{n}"]
            )
    op = export(staff, fmt)
    assert (op.status, op.succeeded) == ("completed", SIZE)
    with gzip.open(export_path(op.export_file), "rt", newline="", encoding="utf-8") as fh:
        if fmt == "csv":
            exported = [row[0] for row in list(csv.reader(fh))[1:]]
        else:
            exported = [json.loads(line)["id"] for line in fh]
    recorded = [sid for sids in op.chunks.values_list("session_ids", flat=True) for sid in sids]
    assert (
        sorted(exported) == sorted(recorded) == sorted(Session.objects.values_list("pk", flat=True))
    )
    assert set(ODD_IDS) <= set(recorded)


def test_a_paused_export_drops_its_part_file_and_its_resume_writes_every_session_once(staff):
    op = operation_create(
        user=staff, action="export", selection=Selection(filter={}), params={"format": "csv"}
    ).operation

    def pause_once() -> bool:
        fresh = BulkOperation.objects.get(pk=op.pk)
        if fresh.processed >= 1400 and not fresh.pause_requested and fresh.status == "running":
            operation_pause(operation=fresh)
        return False

    paused = operation_execute(operation_id=op.pk, should_stop=pause_once)
    paused.refresh_from_db()
    assert paused.status == "paused" and 1400 <= paused.processed < SIZE
    assert not export_path(op.export_file + ".part").exists()
    assert not export_path(op.export_file).exists()
    operation_resume(operation=paused)
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.processed, op.succeeded) == ("completed", SIZE, SIZE)
    with gzip.open(export_path(op.export_file), "rt", newline="", encoding="utf-8") as fh:
        ids = [row[0] for row in list(csv.reader(fh))[1:]]
    assert sorted(ids) == sorted(Session.objects.values_list("pk", flat=True))
    assert len(ids) == SIZE
