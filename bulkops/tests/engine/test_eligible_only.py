"""``operation_create(eligible_only=True)``: "run on the eligible sessions only", the
admin confirmation page's default. What validate called skipped or not eligible gets no
item and is counted in ``excluded`` (left out as previewed), so the operation's failures
are only the unexpected ones; the API's own calls keep their contract (every id an item)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from bulkops.engine import Selection, operation_create, operation_retry, operation_validate
from bulkops.exceptions import SelectionDrift
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import execute, run_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed(owner, make_session):
    """Two eligible for close, one skipped (already closed), two not eligible."""
    make_session(owner, id="m-a1")
    make_session(owner, id="m-a2")
    make_session(owner, id="m-closed", status="closed")
    make_session(owner, id="m-archived", status="archived")
    make_session(owner, id="m-busy", status="processing")
    return ["m-busy", "m-a1", "m-closed", "m-archived", "m-a2"]


def test_only_the_eligible_sessions_get_items_and_the_run_is_completed(owner, mixed):
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=mixed), eligible_only=True
    ).operation
    assert op.total == 2
    assert list(op.items.order_by("pk").values_list("session_id", flat=True)) == ["m-a1", "m-a2"]
    assert op.excluded == {
        "ineligible": [
            {"reason": "archived", "count": 1, "sample": ["m-archived"]},
            {"reason": "processing", "count": 1, "sample": ["m-busy"]},
        ],
        "skipped": [{"reason": "already_closed", "count": 1, "sample": ["m-closed"]}],
    }
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.skipped, op.failed) == ("completed", 2, 0, 0)
    statuses = dict(Session.objects.values_list("pk", "status"))
    assert statuses == {
        "m-a1": "closed",
        "m-a2": "closed",
        "m-closed": "closed",
        "m-archived": "archived",
        "m-busy": "processing",
    }


def test_by_default_every_selected_id_is_an_item_as_the_api_promises(owner, mixed):
    op = execute(owner, "close", mixed)
    assert (op.total, op.status, op.succeeded, op.skipped, op.failed) == (5, "partial", 2, 1, 2)
    assert op.excluded == {}


def test_with_a_selection_token_the_drift_check_still_guards_the_run(owner, mixed):
    token = operation_validate(
        user=owner, action="close", selection=Selection(session_ids=mixed)
    ).selection_token
    Session.objects.filter(pk="m-a2").update(status="processing")
    with pytest.raises(SelectionDrift):
        operation_create(
            user=owner,
            action="close",
            selection=Selection(session_ids=mixed),
            selection_token=token,
            eligible_only=True,
        )
    assert not BulkOperation.objects.exists()


def test_nothing_eligible_is_refused_and_creates_nothing(owner, mixed):
    with pytest.raises(ValidationError, match="nothing to run"):
        operation_create(
            user=owner,
            action="close",
            selection=Selection(session_ids=["m-busy", "m-closed"]),
            eligible_only=True,
        )
    assert not BulkOperation.objects.exists()


def test_the_sample_of_a_reason_is_bounded_and_its_count_complete(owner):
    Session.objects.bulk_create(
        Session(id=f"busy-{n:02d}", owner=owner, status="processing") for n in range(30)
    )
    Session.objects.create(id="free", owner=owner)
    ids = ["free", *(f"busy-{n:02d}" for n in range(30))]
    op = operation_create(
        user=owner, action="archive", selection=Selection(session_ids=ids), eligible_only=True
    ).operation
    [group] = op.excluded["ineligible"]
    assert (group["reason"], group["count"], len(group["sample"])) == ("processing", 30, 20)


def test_a_retry_can_leave_out_what_still_cannot_succeed(owner, mixed):
    first = execute(owner, "close", mixed)
    Session.objects.filter(pk="m-busy").update(status="active")  # the pipeline finished
    retry = operation_retry(operation=first, user=owner, eligible_only=True).operation
    assert list(retry.items.values_list("session_id", flat=True)) == ["m-busy"]
    assert retry.excluded == {
        "ineligible": [{"reason": "archived", "count": 1, "sample": ["m-archived"]}]
    }
    run_worker()
    retry.refresh_from_db()
    assert (retry.status, retry.succeeded) == ("completed", 1)
