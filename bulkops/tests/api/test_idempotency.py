"""Idempotency-Key (DESIGN §5): a replay answers the same operation with
``Idempotent-Replayed: true`` and is never refused nor counted by the rate limit or the
active cap — also when its twin is still being processed (concurrent identical POSTs:
integration/test_attacks.py runs ten against real servers)."""

from __future__ import annotations

from unittest import mock

import pytest

from bulkops.engine import Selection, idempotency, operation_create, request_fingerprint
from bulkops.models import BulkOperation
from bulkops.tests.support import api as support
from bulkops.tests.support.api import ACTION_PATHS, post_json

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def test_first_answer_says_not_replayed_and_the_replay_says_replayed(api, owner, make_session):
    s = make_session(owner)
    body = {"session_ids": [s.pk]}
    first = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first["Idempotent-Replayed"] == "false"
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert BulkOperation.objects.count() == 1


def test_without_a_key_there_is_no_replayed_header(api, owner, make_session):
    s = make_session(owner)
    response = post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]})
    assert response.status_code == 202
    assert not response.has_header("Idempotent-Replayed")


def test_a_retry_replay_says_replayed(api, owner, make_session):
    s = make_session(owner, status="processing")
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=[s.pk])
    ).operation
    BulkOperation.objects.filter(pk=op.pk).update(status="partial", failed=1)
    op.items.update(outcome="failed", reason="processing")
    path = f"/api/bulk/operations/{op.pk}/retry"
    first = api.post(path, HTTP_IDEMPOTENCY_KEY="r-1")
    again = api.post(path, HTTP_IDEMPOTENCY_KEY="r-1")
    assert (first.status_code, again.status_code) == (202, 202), first.content
    assert (first["Idempotent-Replayed"], again["Idempotent-Replayed"]) == ("false", "true")
    assert first.json()["operation_id"] == again.json()["operation_id"]
    assert BulkOperation.objects.count() == 2


def test_a_twin_that_committed_meanwhile_is_replayed_under_the_lock_even_at_the_rate_limit(
    api, owner, make_session, settings
):
    """The twin passed the first look-up before the first request committed: under the
    user's lock it finds that operation — a 202 replay, not a 429, and not counted."""
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "close": "1/m"}
    s = make_session(owner)
    body = {"session_ids": [s.pk]}
    first = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="twin")
    assert first.status_code == 202
    with mock.patch.object(
        idempotency, "operation_replay", side_effect=first_none_then(idempotency.operation_replay)
    ):
        twin = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="twin")
    assert twin.status_code == 202, twin.content
    assert twin["Idempotent-Replayed"] == "true"
    assert twin.json()["operation_id"] == first.json()["operation_id"]
    assert BulkOperation.objects.count() == 1


def first_none_then(real):
    """``operation_replay`` as seen by a twin whose first look-up ran before the other
    request committed."""
    calls = []

    def replay(**kwargs):
        calls.append(kwargs)
        return None if len(calls) == 1 else real(**kwargs)

    return replay


def test_a_replay_is_not_refused_by_the_active_cap(owner, make_session, settings):
    """The engine looks for the key under the user's row lock, before it counts active
    operations: a twin of the operation that filled the cap is its replay, not a 429."""
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 1
    s = make_session(owner)
    selection = Selection(session_ids=[s.pk])
    fingerprint = request_fingerprint(action="close", payload={"session_ids": [s.pk]})
    kwargs = dict(user=owner, action="close", selection=selection, fingerprint=fingerprint)
    first = operation_create(idempotency_key="cap", **kwargs)
    assert first.replayed is False
    twin = operation_create(idempotency_key="cap", **kwargs)
    assert twin.operation.pk == first.operation.pk and twin.replayed is True
    assert BulkOperation.objects.count() == 1


def test_replays_do_not_use_up_the_rate_limit(api, owner, make_session, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "close": "2/m"}
    a, b = make_session(owner), make_session(owner)
    for _ in range(5):
        response = post_json(
            api, ACTION_PATHS["close"], {"session_ids": [a.pk]}, HTTP_IDEMPOTENCY_KEY="same"
        )
        assert response.status_code == 202
    assert post_json(api, ACTION_PATHS["close"], {"session_ids": [b.pk]}).status_code == 202
    assert post_json(api, ACTION_PATHS["close"], {"session_ids": [b.pk]}).status_code == 429
    assert BulkOperation.objects.count() == 2
