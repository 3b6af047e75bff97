"""A small operation confirmed in the admin has finished when Confirm lands on its
progress page (``BULKOPS_INLINE_MAX_SESSIONS``), which then shows the final state."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bulkops.models import BulkOperation, Session

pytestmark = pytest.mark.django_db


def test_confirm_lands_on_the_progress_page_of_the_finished_operation(
    admin_client, superuser, make_session, settings
):
    settings.BULKOPS_INLINE_MAX_SESSIONS = 20
    ok, busy = make_session(superuser).pk, make_session(superuser, status="processing").pk
    response = admin_client.post(
        reverse("admin:bulkops_session_changelist"),
        {"action": "close_sessions", "post": "yes", "_bulk_confirm": "1", "select_across": "0",
         "_selected_action": [ok, busy], "_bulk_token": "t" * 32},
    )  # fmt: skip
    op = BulkOperation.objects.get()
    # The page runs on the eligible sessions: the processing one is left out as previewed.
    assert (op.source, op.status, op.total, op.succeeded) == ("admin", "completed", 1, 1)
    assert response["Location"] == reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])
    assert Session.objects.get(pk=ok).status == "closed"
    page = admin_client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page  # nothing left to wait for
    assert 'aria-valuenow="100"' in page
