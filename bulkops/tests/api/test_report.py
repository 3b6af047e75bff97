"""GET /api/bulk/operations/{id}/report: every item as CSV or JSON, streamed, formula-safe,
for the operation's owner only."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bulkops.models import BulkOperation, BulkOperationItem
from bulkops.tests.support.helpers import execute

pytestmark = pytest.mark.django_db


def report(api, op_id: str, query: str = ""):
    return api.get(f"/api/bulk/operations/{op_id}/report{query}")


def body(response) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


@pytest.fixture
def mixed(owner, make_session):
    """A close with one item of each outcome it can have: succeeded, skipped, failed."""
    make_session(owner, id="a-ok")
    make_session(owner, id="b-closed", status="closed")
    make_session(owner, id="c-busy", status="processing")
    return execute(owner, "close", ["a-ok", "b-closed", "c-busy", "d-gone"])


def test_csv_report_lists_every_item(api, mixed):
    response = report(api, mixed.pk, "?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="report_{mixed.pk}.csv"'
    assert body(response).decode() == (
        "session_id,outcome,reason,message\r\n"
        "a-ok,succeeded,,\r\n"
        "b-closed,skipped,already_closed,The session is already closed.\r\n"
        "c-busy,failed,processing,"
        "A pipeline is working on this session; try again when it is done.\r\n"
        "d-gone,failed,not_found,No such session.\r\n"
    )


def test_csv_is_the_default_format(api, mixed):
    response = report(api, mixed.pk)
    assert response["Content-Type"].startswith("text/csv")
    assert body(response).startswith(b"session_id,outcome,reason,message\r\n")


def test_json_report_lists_every_item(api, mixed):
    response = report(api, mixed.pk, "?format=json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="report_{mixed.pk}.json"'
    data = json.loads(body(response))
    assert data == {
        "operation_id": mixed.pk,
        "action": "close",
        "status": "partial",
        "items": [
            {"session_id": "a-ok", "outcome": "succeeded", "reason": "", "message": ""},
            {
                "session_id": "b-closed",
                "outcome": "skipped",
                "reason": "already_closed",
                "message": "The session is already closed.",
            },
            {
                "session_id": "c-busy",
                "outcome": "failed",
                "reason": "processing",
                "message": "A pipeline is working on this session; try again when it is done.",
            },
            {
                "session_id": "d-gone",
                "outcome": "failed",
                "reason": "not_found",
                "message": "No such session.",
            },
        ],
    }


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_outcome_filter_keeps_one_outcome(api, mixed, fmt):
    response = report(api, mixed.pk, f"?format={fmt}&outcome=failed")
    raw = body(response).decode()
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(raw)))[1:]
        assert [r[:3] for r in rows] == [
            ["c-busy", "failed", "processing"],
            ["d-gone", "failed", "not_found"],
        ]
    else:
        assert [i["session_id"] for i in json.loads(raw)["items"]] == ["c-busy", "d-gone"]


def test_an_outcome_with_no_items_is_an_empty_report(api, mixed):
    assert body(report(api, mixed.pk, "?outcome=cancelled")) == (
        b"session_id,outcome,reason,message\r\n"
    )
    data = json.loads(body(report(api, mixed.pk, "?format=json&outcome=cancelled")))
    assert data["items"] == []


def test_csv_cells_that_would_run_as_formulas_are_neutralised(api, mixed):
    BulkOperationItem.objects.filter(operation=mixed, session_id="d-gone").update(
        reason="@cmd", message='=HYPERLINK("http://evil")'
    )
    BulkOperationItem.objects.filter(operation=mixed, session_id="c-busy").update(
        reason="+1", message="-2+3"
    )
    rows = list(csv.reader(io.StringIO(body(report(api, mixed.pk)).decode())))
    assert rows[3] == ["c-busy", "failed", "'+1", "'-2+3"]
    assert rows[4] == ["d-gone", "failed", "'@cmd", '\'=HYPERLINK("http://evil")']
    # JSON is data, not a spreadsheet: it keeps the text as it is.
    items = json.loads(body(report(api, mixed.pk, "?format=json")))["items"]
    assert items[3]["message"] == '=HYPERLINK("http://evil")'


def test_someone_elses_operation_is_404_like_a_missing_one(api, stranger, make_session):
    theirs = execute(stranger, "close", [make_session(stranger).pk])
    response = report(api, theirs.pk)
    missing = report(api, "op-" + "0" * 32)
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()
    assert b"session_id" not in response.content


@pytest.mark.parametrize(
    "query", ["?format=xlsx", "?format=XML", "?outcome=nope", "?format=csv&outcome=SUCCEEDED"]
)
def test_bad_format_or_outcome_is_400(api, mixed, query):
    response = report(api, mixed.pk, query)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) <= {"format", "outcome"}


def test_anonymous_is_refused(client, mixed):
    assert client.get(f"/api/bulk/operations/{mixed.pk}/report").status_code in (401, 403)


def test_a_large_report_streams_in_pieces_with_every_item(api, owner):
    op = BulkOperation.objects.create(user=owner, action="close", status="completed", total=5001)
    BulkOperationItem.objects.bulk_create(
        [
            BulkOperationItem(operation=op, session_id=f"s-{i:05d}", outcome="succeeded")
            for i in range(5001)
        ],
        batch_size=1000,
    )
    for fmt in ("csv", "json"):
        response = report(api, op.pk, f"?format={fmt}")
        pieces = list(response.streaming_content)
        assert len(pieces) > 2  # written as it is read, not built whole
        raw = b"".join(pieces).decode()
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(raw)))
            assert len(rows) == 5002
            assert rows[1][0] == "s-00000" and rows[-1][0] == "s-05000"
        else:
            items = json.loads(raw)["items"]
            assert [i["session_id"] for i in items] == [f"s-{i:05d}" for i in range(5001)]


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_report_is_an_asynchronous_stream(async_client, owner):
    """Served by the ASGI handler (as under daphne), the report is an async iterator read
    piece by piece — Django would read a synchronous one whole into memory first."""
    from channels.db import database_sync_to_async
    from rest_framework.authtoken.models import Token

    def make() -> tuple[str, str]:
        op = BulkOperation.objects.create(user=owner, action="close", status="completed")
        BulkOperationItem.objects.bulk_create(
            BulkOperationItem(operation=op, session_id=f"s-{i:05d}", outcome="failed")
            for i in range(4500)
        )
        return op.pk, Token.objects.create(user=owner).key

    op_id, key = await database_sync_to_async(make)()  # its connection closed after
    response = await async_client.get(
        f"/api/bulk/operations/{op_id}/report?format=csv", headers={"Authorization": f"Token {key}"}
    )
    assert response.status_code == 200 and response.is_async
    pieces = [piece async for piece in response.streaming_content]
    # The test client keeps connections open (no close_old_connections): close the one
    # the stream's thread opened, as the ASGI handler's request_finished does.
    await database_sync_to_async(lambda: None)()
    assert len(pieces) == 3  # 2,000 + 2,000 + 500 rows (the header with the first)
    rows = list(csv.reader(io.StringIO(b"".join(pieces).decode())))
    assert len(rows) == 4501 and rows[-1][:2] == ["s-04499", "failed"]
