"""export: CSV/JSON files parsed back, formula injection neutralised, atomic rename."""

import csv
import io
import json
import os

import pytest

from bulkops.actions.export import ExportAction, neutralise
from bulkops.exports.storage import export_path
from bulkops.models import BulkOperation
from bulkops.tests.support.helpers import execute, outcomes

pytestmark = pytest.mark.django_db


def read_file(op: BulkOperation) -> str:
    with open(export_path(op.export_file), encoding="utf-8", newline="") as fh:
        return fh.read()


def test_export_csv_has_one_record_per_session(owner, make_session):
    sessions = [make_session(owner, title=f"T{i}", metadata={"i": i}) for i in range(3)]
    op = execute(owner, "export", [s.pk for s in sessions], format="csv")
    assert op.status == "completed"
    assert op.export_file.startswith("session_export_")
    assert op.export_file.endswith(f"_{op.pk}.csv")
    rows = list(csv.DictReader(io.StringIO(read_file(op))))
    assert [r["id"] for r in rows] == sorted(s.pk for s in sessions)
    assert rows[0]["title"] == "T0"
    assert json.loads(rows[0]["metadata"]) == {"i": 0}
    assert rows[0]["owner"] == "owner"
    assert "content_size" not in rows[0]


def test_export_json_with_details(owner, make_session):
    a = make_session(owner, content="héllo", exports=2)
    b = make_session(owner, status="archived")
    op = execute(owner, "export", [a.pk, b.pk], format="json", include_details=True)
    records = json.loads(read_file(op))
    assert [r["id"] for r in records] == [a.pk, b.pk]
    assert records[0]["content_size"] == len("héllo".encode())
    assert records[0]["exports_count"] == 2
    assert records[1]["status"] == "archived"
    assert set(records[0]) >= {"created_at", "updated_at", "closed_at", "archived_at"}


def test_export_json_of_only_failures_is_valid_empty_list(owner, make_session):
    gone = make_session(owner, deleted=True)
    op = execute(owner, "export", [gone.pk], format="json")
    assert op.status == "failed"
    assert json.loads(read_file(op)) == []


def test_export_eligibility_includes_processing_and_archived(owner, stranger, make_session):
    busy = make_session(owner, status="processing")
    archived = make_session(owner, status="archived")
    gone = make_session(owner, deleted=True)
    theirs = make_session(stranger)
    op = execute(owner, "export", [busy.pk, archived.pk, gone.pk, theirs.pk])
    assert outcomes(op) == {
        busy.pk: ("succeeded", ""),
        archived.pk: ("succeeded", ""),
        gone.pk: ("failed", "deleted"),
        theirs.pk: ("failed", "not_found"),
    }
    ids = [r["id"] for r in csv.DictReader(io.StringIO(read_file(op)))]
    assert sorted(ids) == sorted([busy.pk, archived.pk])


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_export_csv_neutralises_formula_cells(owner, make_session, prefix):
    s = make_session(owner, title=f'{prefix}HYPERLINK("http://evil")')
    op = execute(owner, "export", [s.pk])
    row = next(csv.DictReader(io.StringIO(read_file(op), newline="")))
    assert row["title"] == "'" + s.title
    assert not row["title"].startswith(("=", "+", "-", "@", "\t", "\r"))


def test_neutralise_leaves_plain_text_alone():
    assert neutralise("plain") == "plain"
    assert neutralise("") == ""


def test_export_file_appears_only_when_complete(owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 2
    sessions = [make_session(owner) for _ in range(5)]
    seen_during_run: list[tuple[bool, bool]] = []
    original = ExportAction.apply

    def spy(self, *, ids, operation, now):
        original(self, ids=ids, operation=operation, now=now)
        final = export_path(operation.export_file)
        seen_during_run.append((final.exists(), os.path.exists(str(final) + ".part")))

    ExportAction.apply = spy
    try:
        op = execute(owner, "export", [s.pk for s in sessions])
    finally:
        ExportAction.apply = original
    assert seen_during_run == [(False, True)] * 3
    assert export_path(op.export_file).exists()
    assert not os.path.exists(str(export_path(op.export_file)) + ".part")
    assert len(list(csv.DictReader(io.StringIO(read_file(op))))) == 5


def test_export_timestamps_are_iso_8601_utc_with_microseconds(owner, make_session):
    import datetime

    moment = datetime.datetime(2024, 1, 10, 9, 30, 0, tzinfo=datetime.UTC)
    whole = make_session(owner, created_at=moment)
    fine = make_session(owner, created_at=moment.replace(microsecond=123456), status="closed")
    op = execute(owner, "export", [whole.pk, fine.pk], include_details=True)
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(read_file(op)))}
    assert rows[whole.pk]["created_at"] == "2024-01-10T09:30:00.000000+00:00"
    assert rows[fine.pk]["created_at"] == "2024-01-10T09:30:00.123456+00:00"
    assert datetime.datetime.fromisoformat(rows[fine.pk]["created_at"]) == fine.created_at
    assert rows[whole.pk]["closed_at"] == ""  # NULL stays empty
    assert rows[whole.pk]["deleted_at"] == ""


def test_export_json_keeps_metadata_exactly(owner, make_session):
    metadata = {"name": "Grüße 世界", "nested": {"a": [1, 2.5, None, True]}, "quote": 'a"b'}
    s = make_session(owner, metadata=metadata)
    op = execute(owner, "export", [s.pk], format="json", include_details=True)
    (record,) = json.loads(read_file(op))
    assert record["metadata"] == metadata
    assert record["id"] == s.pk and record["exports_count"] == 0


def test_an_export_that_cannot_write_its_file_fails_at_once_with_the_cause(
    owner, make_session, settings, tmp_path
):
    """The export directory is a plain file (as unwritable as it gets, even for root):
    ``begin`` raises, and the operation ends ``failed`` in the same run — no lingering
    ``running``, no retries — saying why; the download is a 404, never a 500."""
    from bulkops.tests.support.api import token_client

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.BULKOPS_EXPORT_DIR = blocker / "exports"
    make_session(owner, id="s1")
    op = execute(owner, "export", ["s1"])
    assert (op.status, op.attempts, op.failed) == ("failed", 1, 1)
    assert op.error.startswith("Could not write the export file: Not a directory;"), op.error
    assert str(blocker) not in op.error  # no server paths in what the API shows
    assert outcomes(op) == {"s1": ("failed", "internal_error")}
    response = token_client(owner).get(f"/api/download/{op.export_file}")
    assert response.status_code == 404
    assert response.json()["detail"]
