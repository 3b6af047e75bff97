"""The admin's *Retry failed items*: a confirmation page like every action's — the
eligibility partition of the failed sessions now (what cannot succeed is shown, and left
out by default), the limits, then Confirm — through the Django test client."""

from __future__ import annotations

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


def confirm_page(client, page, **fields):
    """What the retry page's Confirm posts."""
    return client.post(
        url("retry", page.context["operation"]),
        {
            "post": "yes",
            "_bulk_token": page.context["confirm_token"],
            "_bulk_selection_token": page.context["selection_token"],
            **fields,
        },
    )


@pytest.fixture
def failed_close(superuser, make_session):
    """A close whose three failures differ now: one pipeline finished (can succeed),
    one still runs, one session is archived (close can never succeed on it)."""
    make_session(superuser, id="f-ok")
    make_session(superuser, id="f-done", status="processing")
    make_session(superuser, id="f-busy", status="processing")
    make_session(superuser, id="f-archived", status="archived")
    op = execute(superuser, "close", ["f-ok", "f-done", "f-busy", "f-archived"])
    Session.objects.filter(pk="f-done").update(status="active")
    return op


def test_the_progress_page_links_the_confirmation_not_a_post(admin_client, failed_close):
    html = admin_client.get(url("progress", failed_close)).content.decode()
    assert f'href="{url("retry", failed_close)}"' in html
    assert f'action="{url("retry", failed_close)}"' not in html


def test_the_retry_page_shows_the_partition_and_changes_nothing(admin_client, failed_close):
    page = admin_client.get(url("retry", failed_close))
    assert page.status_code == 200
    result = page.context["result"]
    assert result["eligible_ids"] == ["f-done"]
    assert sorted((i["session_id"], i["reason"]) for i in result["ineligible"]) == [
        ("f-archived", "archived"),
        ("f-busy", "processing"),
    ]
    html = page.content.decode()
    assert "Retry: 3 sessions failed in this operation" in html
    assert "Confirm — Retry: 1 session" in html
    assert "Only the eligible session" in html and "All 3 selected sessions" in html
    assert "Rate limit:" in html and "retry requests left" in html
    assert BulkOperation.objects.count() == 1


def test_confirm_retries_the_eligible_sessions_only(admin_client, failed_close):
    page = admin_client.get(url("retry", failed_close))
    response = confirm_page(admin_client, page)
    retry = BulkOperation.objects.exclude(pk=failed_close.pk).get()
    assert response["Location"] == url("progress", retry)
    assert "Retrying 1 failed session." in messages_of(response)
    assert (retry.source, retry.total, retry.reason) == (
        "admin",
        1,
        f"Retry of {failed_close.pk}",
    )
    run_worker()
    retry.refresh_from_db()
    assert (retry.status, outcomes(retry)) == ("completed", {"f-done": ("succeeded", "")})
    assert sum(g["count"] for g in retry.excluded["ineligible"]) == 2
    # Sent twice: the same retry.
    assert confirm_page(admin_client, page)["Location"] == url("progress", retry)
    assert BulkOperation.objects.count() == 2


def test_confirm_on_every_failed_session_records_them_again(admin_client, failed_close):
    page = admin_client.get(url("retry", failed_close))
    confirm_page(admin_client, page, run_on="all")
    retry = BulkOperation.objects.exclude(pk=failed_close.pk).get()
    run_worker()
    retry.refresh_from_db()
    assert (retry.status, retry.succeeded, retry.failed) == ("partial", 1, 2)


def test_a_retry_page_whose_sessions_changed_since_starts_nothing(admin_client, failed_close):
    page = admin_client.get(url("retry", failed_close))
    Session.objects.filter(pk="f-busy").update(status="active")
    again = confirm_page(admin_client, page)
    assert again.status_code == 200
    assert "Nothing was done" in again.context["drift_notice"]
    assert again.context["result"]["eligible_count"] == 2
    assert BulkOperation.objects.count() == 1


def test_over_the_retry_rate_limit_the_page_comes_back(admin_client, failed_close, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "retry": "1/m"}
    first_page = admin_client.get(url("retry", failed_close))
    confirm_page(admin_client, first_page)
    assert BulkOperation.objects.count() == 2
    run_worker()
    Session.objects.filter(pk="f-busy").update(status="active")
    page = admin_client.get(url("retry", failed_close))
    refused = confirm_page(admin_client, page)
    assert refused.status_code == 200
    assert "Rate limit exceeded for retry" in refused.context["refusal_notice"]
    assert BulkOperation.objects.count() == 2


def test_nothing_to_retry_is_a_message(admin_client, superuser, make_session):
    op = execute(superuser, "close", [make_session(superuser, id="fine").pk])
    response = admin_client.get(url("retry", op))
    assert response.status_code == 302 and response["Location"] == url("progress", op)
    assert messages_of(response) == ["Nothing to retry: no item of this operation failed."]


def test_only_the_owner_may_retry(client, make_user, make_session, failed_close):
    root = make_user("other-root", superuser=True)
    client.force_login(root)  # sees the operation, may not retry someone else's
    assert client.get(url("retry", failed_close)).status_code == 403
    assert client.post(url("retry", failed_close), {"post": "yes"}).status_code == 403
    assert BulkOperation.objects.count() == 1
