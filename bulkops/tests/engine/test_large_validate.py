"""Validate past the cap (engine.large.counts, engine.preview): the counts by outcome
and by reason come from one GROUP BY that the action's own ``check`` sorts, so they
agree with the row-by-row partition; the lists are samples; the selection_token binds
the filter and the counts."""

from __future__ import annotations

import itertools
import json

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from bulkops.engine import Selection, operation_create, operation_validate
from bulkops.exceptions import SelectionDrift
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
    pytest.mark.django_db,
]

LARGE = "bulkops.run_large_operation"
STATUSES = ("active", "processing", "closed", "archived")
#: Every selectable action with the parameters that change its eligibility.
VARIANTS = [
    ("close", {}),
    ("archive", {}),
    ("restore", {}),
    ("export", {}),
    ("delete", {}),
    ("delete", {"soft_delete": False}),
    ("delete", {"soft_delete": False, "cascade_exports": True}),
]
SUMMARY = ("eligible_count", "skipped_count", "ineligible_count", "counts_by_reason")


@pytest.fixture
def staff(make_user):
    perms = (LARGE, "bulkops.change_session", "bulkops.delete_session", "bulkops.view_session")
    return make_user(staff=True, perms=perms)


@pytest.fixture
def every_state(owner, make_session):
    """Three sessions of every status × deleted × has-exports combination."""
    for status, deleted, exports in itertools.product(STATUSES, (False, True), (0, 1)):
        for _ in range(3):
            make_session(owner, status=status, deleted=deleted, exports=exports)


def validate(user, action, params=None, **selection):
    return operation_validate(
        user=user, action=action, selection=Selection(**selection), params=params
    ).as_dict()


@pytest.mark.parametrize(("action", "params"), VARIANTS)
@pytest.mark.parametrize("deleted", [False, True])
def test_counts_past_the_cap_agree_with_the_row_by_row_partition(
    staff, make_user, every_state, settings, action, params, deleted
):
    selection = {"filter": {"deleted": deleted}}
    small = validate(staff, action, params, **selection)
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = settings.BULKOPS_MAX_EXPORT_SESSIONS = 5
    large = validate(staff, action, params, **selection)
    assert large["lists_truncated"] and not small["lists_truncated"]
    assert {k: large[k] for k in SUMMARY} == {k: small[k] for k in SUMMARY}
    assert large.get("cascade") == small.get("cascade")


def test_hard_delete_without_its_permission_counts_every_session_permission_denied(
    make_user, every_state, settings
):
    user = make_user(staff=True, perms=(LARGE, "bulkops.delete_session"))
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 5
    result = validate(user, "delete", {"soft_delete": False}, filter={})
    assert result["counts_by_reason"] == {"permission_denied": 24}  # the live ones
    assert result["eligible_count"] == 0


def test_past_the_cap_the_lists_are_at_most_20_samples_per_reason_in_id_order(
    staff, owner, make_session, settings
):
    for i in range(30):
        make_session(owner, id=f"a-{i:03d}")
        make_session(owner, id=f"c-{i:03d}", status="closed")
    for i in range(4):
        make_session(owner, id=f"p-{i:03d}", status="processing")
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 10
    result = validate(staff, "close", filter={})
    assert (result["eligible_count"], result["skipped_count"]) == (30, 30)
    assert result["counts_by_reason"] == {"already_closed": 30, "processing": 4}
    assert result["eligible_ids"] == [f"a-{i:03d}" for i in range(20)]
    assert [e["session_id"] for e in result["eligible"]] == result["eligible_ids"]
    assert result["eligible"][0] == {
        "session_id": "a-000",
        "title": "Session 1",
        "status": "active",
    }
    assert [s["session_id"] for s in result["skipped"]] == [f"c-{i:03d}" for i in range(20)]
    assert result["ineligible"][0] == {
        "session_id": "p-000",
        "reason": "processing",
        "message": "A pipeline is working on this session; try again when it is done.",
    }
    assert len(result["ineligible"]) == 4
    assert result["estimated_duration_seconds"] > 0


def test_validate_past_the_cap_changes_nothing(staff, owner, make_session, settings):
    for _ in range(6):
        make_session(owner)
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 5
    before = list(Session.objects.order_by("pk").values_list("pk", "status", "updated_at"))
    validate(staff, "close", filter={})
    assert list(Session.objects.order_by("pk").values_list("pk", "status", "updated_at")) == before
    assert not BulkOperation.objects.exists()


def test_past_the_large_cap_validate_answers_400_with_the_count_and_the_cap(
    staff, owner, make_session, settings
):
    for _ in range(10):
        make_session(owner)
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 5
    settings.BULKOPS_MAX_LARGE_OPERATION_SESSIONS = 8
    with pytest.raises(
        ValidationError, match="matches 10 sessions; the cap for large operations is 8"
    ):
        validate(staff, "close", filter={})


@override_settings(BULKOPS_MAX_SESSIONS_PER_OPERATION=5)
def test_the_token_binds_the_counts_by_reason_not_the_ids(staff, owner, make_session):
    """Past the cap the token cannot bind every id: it binds the filter and the counts
    by part and reason. A session that moves from one reason to another is drift; a
    token validated for one filter does not start another that happens to count the
    same."""
    for _ in range(6):
        make_session(owner)
    closed = make_session(owner, status="closed")
    token = validate(staff, "close", filter={})["selection_token"]
    assert len(token) < 300
    unchanged = operation_create(
        user=staff, action="close", selection=Selection(filter={}), selection_token=token
    ).operation
    assert unchanged.is_large and unchanged.total == 7
    unchanged.delete()
    Session.objects.filter(pk=closed.pk).update(status="archived")  # skipped → ineligible
    with pytest.raises(SelectionDrift, match=r"7 sessions .* then, 7 sessions .* now"):
        operation_create(
            user=staff, action="close", selection=Selection(filter={}), selection_token=token
        )
    other = validate(staff, "close", filter={"status": ["active", "archived"]})
    with pytest.raises(SelectionDrift):
        operation_create(
            user=staff,
            action="close",
            selection=Selection(filter={}),
            selection_token=other["selection_token"],
        )
    assert not BulkOperation.objects.exists()


def test_the_answer_stays_small_whatever_the_size(staff, owner, make_session, settings):
    for i in range(300):
        make_session(owner, status=STATUSES[i % 4], title="x" * 200)
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 10
    result = validate(staff, "close", filter={})
    assert len(result["eligible"]) + len(result["skipped"]) + len(result["ineligible"]) == 80
    assert len(json.dumps(result)) < 50_000
