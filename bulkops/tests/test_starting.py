"""One way to start an operation: the API, the admin and the ``bulk`` command each make
one call to the engine (``operation_create``, ``operation_retry``, ``operation_undo``),
which looks for an idempotent replay, checks the rate limit, creates and counts. So
every interface shares one budget per user and scope, a replay is never counted, and
retry and undo are idempotent and rate-limited everywhere — proved by the rows and the
counters each interface leaves."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from bulkops.engine import Selection, operation_create
from bulkops.models import BulkOperation, Session
from bulkops.ratelimits import rate_limit_status
from bulkops.tests.support.api import post_json, token_client

pytestmark = pytest.mark.django_db

TOKEN = "t" * 32


@pytest.fixture
def boss(make_user):
    return make_user("boss", superuser=True)


@pytest.fixture
def web(client, boss):
    client.force_login(boss)
    return client


def limit(settings, scope: str, rate: str) -> None:
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, scope: rate}


def admin_confirm_close(web, sid: str):
    """Confirm on the confirmation page of closing ``sid`` (one page token per session)."""
    return web.post(
        reverse("admin:bulkops_session_changelist"),
        {"action": "close_sessions", "post": "yes", "_bulk_confirm": "1",
         "select_across": "0", "_selected_action": [sid], "_bulk_token": f"{TOKEN}-{sid}"},
    )  # fmt: skip


def used(user, scope: str) -> int:
    return rate_limit_status(user=user)[scope]["used"]


def test_the_api_the_admin_and_the_cli_count_against_one_budget(boss, web, make_session, settings):
    limit(settings, "close", "3/m")
    ids = [make_session(boss).pk for _ in range(6)]
    assert post_json(token_client(boss), "/api/bulk/sessions/close", {"session_ids": [ids[0]]}
                     ).status_code == 202  # fmt: skip
    assert admin_confirm_close(web, ids[1]).status_code == 302
    call_command("bulk", "close", user="boss", ids=[ids[2]], stdout=io.StringIO())
    assert sorted(BulkOperation.objects.values_list("source", flat=True)) == ["admin", "api", "cli"]
    assert used(boss, "close") == 3

    refused = post_json(token_client(boss), "/api/bulk/sessions/close", {"session_ids": [ids[3]]})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    web_refused = admin_confirm_close(web, ids[4])  # the page again, saying why
    assert "Rate limit exceeded for close" in web_refused.content.decode()
    with pytest.raises(CommandError, match="Rate limit exceeded for close"):
        call_command("bulk", "close", user="boss", ids=[ids[5]], stdout=io.StringIO())
    assert BulkOperation.objects.count() == 3
    assert used(boss, "close") == 3  # refusals are not counted


def test_a_confirm_posted_twice_starts_one_operation_and_counts_once(boss, web, make_session):
    sid = make_session(boss).pk
    first, again = admin_confirm_close(web, sid), admin_confirm_close(web, sid)
    op = BulkOperation.objects.get()
    assert (
        first["Location"]
        == again["Location"]
        == reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])
    )
    assert used(boss, "close") == 1


@pytest.fixture
def partly_failed(boss, make_session):
    """A finished close whose two sessions failed ``processing`` and are free now."""
    ids = [make_session(boss, status="processing").pk for _ in range(2)]
    op = operation_create(user=boss, action="close", selection=Selection(session_ids=ids)).operation
    BulkOperation.objects.filter(pk=op.pk).update(status="failed", failed=2, processed=2)
    op.items.update(outcome="failed", reason="processing")
    Session.objects.filter(pk__in=ids).update(status="active")
    op.refresh_from_db()
    return op


def test_retry_is_idempotent_and_rate_limited_in_the_admin_and_the_api(
    boss, web, partly_failed, settings
):
    limit(settings, "retry", "1/m")
    path = reverse("admin:bulkops_bulkoperation_retry", args=[partly_failed.pk])
    first = web.post(path, {"post": "yes", "_bulk_token": TOKEN})  # its confirmation page
    again = web.post(path, {"post": "yes", "_bulk_token": TOKEN})
    retry = BulkOperation.objects.exclude(pk=partly_failed.pk).get()
    assert (retry.source, retry.total) == ("admin", 2)
    assert first["Location"] == again["Location"]
    assert used(boss, "retry") == 1

    api = token_client(boss)
    refused = api.post(f"/api/bulk/operations/{partly_failed.pk}/retry", HTTP_IDEMPOTENCY_KEY="r")
    assert refused.status_code == 429
    assert BulkOperation.objects.count() == 2


@pytest.fixture
def two_closed(boss, make_session, settings):
    """Two finished closes of one session each, run inline (undo runs inline too)."""
    settings.BULKOPS_INLINE_MAX_SESSIONS = 20
    ops = []
    for _ in range(2):
        sid = make_session(boss).pk
        ops.append(
            operation_create(user=boss, action="close", selection=Selection(session_ids=[sid]))
        )
    assert [s.operation.status for s in ops] == ["completed", "completed"]
    return [s.operation for s in ops]


def test_undo_is_idempotent_and_rate_limited_in_the_admin_the_api_and_the_cli(
    boss, web, two_closed, settings
):
    limit(settings, "undo", "1/m")
    first_op, second_op = two_closed
    path = reverse("admin:bulkops_bulkoperation_undo", args=[first_op.pk])
    first = web.post(path, {"post": "yes", "_bulk_token": TOKEN})
    again = web.post(path, {"post": "yes", "_bulk_token": TOKEN})
    undo = BulkOperation.objects.get(action="undo")
    assert (undo.source, undo.status, undo.params["undoes"]) == ("admin", "completed", first_op.pk)
    assert first["Location"] == again["Location"]
    assert used(boss, "undo") == 1

    api = token_client(boss)
    assert api.post(f"/api/bulk/operations/{second_op.pk}/undo").status_code == 429
    with pytest.raises(CommandError, match="Rate limit exceeded for undo"):
        call_command("bulk", "undo", second_op.pk, user="boss", stdout=io.StringIO())
    assert BulkOperation.objects.filter(action="undo").count() == 1
