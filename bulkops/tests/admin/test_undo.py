"""The admin's Undo (progress page → confirmation page → the undo's progress page) and
the completion report link, through the Django test client."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import execute, outcomes, run_worker

pytestmark = pytest.mark.django_db


def url(name: str, op: BulkOperation) -> str:
    return reverse(f"admin:bulkops_bulkoperation_{name}", args=[op.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def staff(make_user):
    return make_user("staffer", staff=True)


@pytest.fixture
def closed_three(staff, make_session):
    """A close of three of the staff user's sessions; the third was reopened since."""
    for sid in ("u-1", "u-2", "u-3"):
        make_session(staff, id=sid, title=f"Title {sid}")
    op = execute(staff, "close", ["u-1", "u-2", "u-3"])
    Session.objects.filter(pk="u-3").update(status="active", closed_at=None)
    return op


def test_progress_page_offers_undo_and_the_report(client, staff, closed_three):
    client.force_login(staff)
    page = client.get(url("progress", closed_three)).content.decode()
    assert url("undo", closed_three) in page
    assert f"{url('report', closed_three)}?format=csv" in page
    assert f"{url('report', closed_three)}?format=json" in page


def test_undo_confirmation_shows_the_partition_and_changes_nothing(client, staff, closed_three):
    client.force_login(staff)
    response = client.get(url("undo", closed_three))
    assert response.status_code == 200
    result = response.context["result"]
    assert (result["eligible_count"], result["skipped_count"], result["ineligible_count"]) == (
        2,
        0,
        1,
    )
    assert result["ineligible"][0]["session_id"] == "u-3"
    assert result["ineligible"][0]["reason"] == "changed_since"
    page = response.content.decode()
    assert "Title u-1" in page and "Title u-3" in page and "changed_since" in page
    assert "Confirm — Undo: 2 sessions" in page
    assert BulkOperation.objects.count() == 1
    assert list(Session.objects.order_by("pk").values_list("status", flat=True)) == [
        "closed",
        "closed",
        "active",
    ]


def test_confirming_starts_the_undo_and_opens_its_progress_page(client, staff, closed_three):
    client.force_login(staff)
    token = client.get(url("undo", closed_three)).context["confirm_token"]
    response = client.post(url("undo", closed_three), {"post": "yes", "_bulk_token": token})
    new = BulkOperation.objects.get(action="undo")
    assert response.status_code == 302
    assert response["Location"] == url("progress", new)
    assert (new.source, new.user, new.params) == ("admin", staff, {"undoes": closed_three.pk})
    assert "Undo of 2 sessions started." in messages_of(response)
    # The same Confirm sent again: the same undo, not a second one nor a 409.
    again = client.post(url("undo", closed_three), {"post": "yes", "_bulk_token": token})
    assert again["Location"] == url("progress", new)
    run_worker()
    new.refresh_from_db()
    # On the eligible sessions only (the default): u-3, reopened since, is left out as
    # the page previewed it, and the undo is completed.
    assert outcomes(new) == {"u-1": ("succeeded", ""), "u-2": ("succeeded", "")}
    assert new.status == "completed"
    assert new.excluded == {
        "ineligible": [{"reason": "changed_since", "count": 1, "sample": ["u-3"]}]
    }
    assert set(Session.objects.values_list("status", flat=True)) == {"active"}
    page = client.get(url("progress", closed_three)).content.decode()
    assert url("undo", closed_three) not in page and new.pk in page  # "Undone by"


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_operation_that_cannot_be_undone_is_a_message(client, staff, make_session, method):
    client.force_login(staff)
    op = execute(staff, "export", [make_session(staff).pk], format="csv")
    assert url("undo", op) not in client.get(url("progress", op)).content.decode()
    response = getattr(client, method)(url("undo", op), {"post": "yes"})
    assert response.status_code == 302 and response["Location"] == url("progress", op)
    assert messages_of(response) == ["Export (CSV) cannot be undone."]
    assert BulkOperation.objects.count() == 1


def test_undo_of_a_soft_delete_that_removed_exports_says_why_before_any_confirmation(
    client, staff, make_session
):
    client.force_login(staff)
    op = execute(staff, "delete", [make_session(staff, exports=2).pk], cascade_exports=True)
    assert url("undo", op) not in client.get(url("progress", op)).content.decode()
    response = client.get(url("undo", op))
    assert response.status_code == 302 and response["Location"] == url("progress", op)
    [message] = messages_of(response)
    assert "exports were removed with them" in message
    assert BulkOperation.objects.count() == 1


def test_other_staff_get_404_and_nothing_changes(client, make_user, closed_three):
    other = make_user("other", staff=True, perms=("bulkops.change_session",))
    client.force_login(other)
    for name in ("undo", "report"):
        assert client.get(url(name, closed_three)).status_code == 404
    assert client.post(url("undo", closed_three), {"post": "yes"}).status_code == 404
    assert BulkOperation.objects.count() == 1


def test_a_superuser_may_undo_anyones_operation(client, make_user, closed_three):
    root = make_user("root", superuser=True)
    client.force_login(root)
    client.post(url("undo", closed_three), {"post": "yes", "run_on": "all"})
    run_worker()
    new = BulkOperation.objects.get(action="undo")
    assert (new.user, new.succeeded, new.failed) == (root, 2, 1)
    assert Session.objects.get(pk="u-1").status == "active"


def test_admin_report_streams_the_items(client, staff, closed_three):
    client.force_login(staff)
    response = client.get(url("report", closed_three) + "?format=csv&outcome=succeeded")
    assert response["Content-Disposition"] == (
        f'attachment; filename="report_{closed_three.pk}.csv"'
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [
        ["session_id", "outcome", "reason", "message"],
        ["u-1", "succeeded", "", ""],
        ["u-2", "succeeded", "", ""],
        ["u-3", "succeeded", "", ""],
    ]


def test_retry_of_an_undo_whose_undone_operation_is_gone_is_a_message(client, staff, closed_three):
    """The admin's *Retry failed items* takes the API's path: a sentence, nothing started."""
    client.force_login(staff)
    client.post(url("undo", closed_three), {"post": "yes", "run_on": "all"})
    run_worker()
    undo = BulkOperation.objects.get(action="undo")
    assert undo.failed == 1  # u-3 was reopened since the close
    BulkOperation.objects.filter(pk=closed_three.pk).delete()
    for response in (
        client.get(url("retry", undo)),
        client.post(url("retry", undo), {"post": "yes"}),
    ):
        assert response.status_code == 302 and response["Location"] == url("progress", undo)
        message = messages_of(response)[-1]
        assert closed_three.pk in message and "no longer exists" in message
    assert list(BulkOperation.objects.values_list("pk", flat=True)) == [undo.pk]


def test_undo_confirmation_shows_each_status_now_and_after_the_undo(client, staff, make_session):
    make_session(staff, id="w-active")
    make_session(staff, id="w-closed", status="closed")
    archive = execute(staff, "archive", ["w-active", "w-closed"])
    client.force_login(staff)
    page = client.get(url("undo", archive))
    rows = {row["session_id"]: row for row in page.context["eligible_rows"]}
    assert {sid: (row["status"], row["after"]) for sid, row in rows.items()} == {
        "w-active": ("archived", "active"),
        "w-closed": ("archived", "closed"),
    }
    html = page.content.decode()
    assert "Status now" in html and "After the undo" in html
    assert html.count("data-status-after") == 2


def test_undo_of_a_soft_delete_shows_the_sessions_come_back(client, staff, make_session):
    make_session(staff, id="d-1", status="closed")
    delete = execute(staff, "delete", ["d-1"])
    client.force_login(staff)
    [row] = client.get(url("undo", delete)).context["eligible_rows"]
    assert (row["status"], row["after"]) == ("closed, deleted", "closed")
