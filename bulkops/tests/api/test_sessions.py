"""GET /api/sessions/ and /api/sessions/{id}/: the caller's sessions, filtered, searched,
ordered and paginated; someone else's session is a 404."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bulkops.models import Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import token_client

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def sessions(owner, stranger, make_session):
    now = timezone.now()
    make_session(owner, id="a-active", title="Alpha report", created_at=now)
    make_session(owner, id="b-closed", status="closed", created_at=now - datetime.timedelta(days=2))
    make_session(owner, id="c-deleted", deleted=True, created_at=now - datetime.timedelta(days=4))
    make_session(
        owner, id="d-archived", status="archived", created_at=now - datetime.timedelta(days=6)
    )
    make_session(stranger, id="z-theirs", title="Alpha theirs")
    return now


def test_list_shows_only_live_own_sessions_newest_first(api, sessions):
    assert ids(api.get("/api/sessions/")) == ["a-active", "b-closed", "d-archived"]
    assert ids(api.get("/api/sessions")) == ["a-active", "b-closed", "d-archived"]


def test_filters(api, sessions):
    assert ids(api.get("/api/sessions/?status=closed&status=archived")) == [
        "b-closed",
        "d-archived",
    ]
    assert ids(api.get("/api/sessions/?search=alpha")) == ["a-active"]
    assert ids(api.get("/api/sessions/?deleted=true")) == ["c-deleted"]
    after = (sessions - datetime.timedelta(days=3)).isoformat()
    assert ids(api.get("/api/sessions/", {"created_after": after})) == ["a-active", "b-closed"]
    before = (sessions - datetime.timedelta(days=1)).isoformat()
    assert ids(api.get("/api/sessions/", {"created_before": before})) == ["b-closed", "d-archived"]
    assert ids(api.get("/api/sessions/?owner=stranger")) == []


@pytest.mark.parametrize("offset", ["+20:07", "-19:39"])
def test_date_times_with_any_iso_offset_work(api, sessions, offset):
    response = api.get("/api/sessions/", {"created_after": f"2000-01-01T00:00:00{offset}"})
    assert ids(response) == ["a-active", "b-closed", "d-archived"]


def test_date_time_out_of_range_in_utc_is_400(api, sessions):
    response = api.get("/api/sessions/", {"created_before": "0001-01-01T00:00:00+05:00"})
    assert response.status_code == 400


def test_ordering_and_pagination(api, sessions):
    assert ids(api.get("/api/sessions/?ordering=id")) == ["a-active", "b-closed", "d-archived"]
    page = api.get("/api/sessions/?ordering=-id&page_size=2&page=2").json()
    assert page["count"] == 3 and [r["id"] for r in page["results"]] == ["a-active"]
    assert api.get("/api/sessions/?page=").status_code == 404
    assert api.get("/api/sessions/?page=0").status_code == 404


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("title", ["same-1", "same-2", "same-3", "same-4", "zz"]),
        ("-title", ["zz", "same-4", "same-3", "same-2", "same-1"]),
        ("status,title", ["same-1", "same-2", "same-3", "same-4", "zz"]),
        # created_at pairs with id the way the default order does (newest first, then id).
        ("created_at", ["same-4", "same-3", "same-2", "same-1", "zz"]),
        ("-created_at", ["zz", "same-1", "same-2", "same-3", "same-4"]),
    ],
)
def test_ordering_breaks_ties_by_id_so_pages_never_skip_or_repeat_a_session(
    api, owner, make_session, ordering, expected
):
    moment = timezone.now() - datetime.timedelta(days=1)
    for n in (3, 1, 4, 2):  # created in no particular id order, all at the same moment
        make_session(owner, id=f"same-{n}", title="Same title", created_at=moment)
    make_session(owner, id="zz", title="Zebra", created_at=moment + datetime.timedelta(hours=1))
    pages = [
        ids(api.get(f"/api/sessions/?ordering={ordering}&page_size=2&page={n}")) for n in (1, 2, 3)
    ]
    assert [sid for page in pages for sid in page] == expected


def test_a_list_page_never_reads_the_content_or_the_archive(api, sessions):
    with CaptureQueriesContext(connection) as ctx:
        response = api.get("/api/sessions/")
    assert len(response.json()["results"]) == 3
    reads = [q["sql"] for q in ctx.captured_queries if 'FROM "bulkops_session"' in q["sql"]]
    assert reads and not any('"content"' in sql or '"archive_blob"' in sql for sql in reads)
    detail = api.get("/api/sessions/a-active/").json()
    assert "content" in detail  # one session shows it


@pytest.mark.parametrize(
    "query",
    [
        "status=gone",
        "ordering=content",
        "deleted=maybe",
        "created_after=yesterday",
        "page_size=5000",
        "page_size=abc",
        "search=" + "x" * 201,
        "search=a%00b",
    ],
)
def test_bad_query_is_400(api, sessions, query):
    assert api.get(f"/api/sessions/?{query}").status_code == 400


def test_staff_with_view_permission_sees_everyones_and_filters_by_owner(
    sessions, make_user, stranger
):
    staff = make_user("auditor", staff=True, perms=("bulkops.view_session",))
    client = token_client(staff)
    assert "z-theirs" in ids(client.get("/api/sessions/"))
    assert ids(client.get(f"/api/sessions/?owner={stranger.pk}")) == ["z-theirs"]
    assert ids(client.get("/api/sessions/?owner=stranger")) == ["z-theirs"]


def test_detail(api, sessions):
    data = api.get("/api/sessions/a-active/").json()
    assert (data["id"], data["title"], data["content"], data["owner"]) == (
        "a-active",
        "Alpha report",
        "hello",
        "owner",
    )
    assert api.get("/api/sessions/a-active").status_code == 200


@pytest.mark.parametrize("session_id", ["z-theirs", "nope", "..%2F..%2Fetc"])
def test_someone_elses_or_unknown_session_is_404(api, sessions, session_id):
    before = list(Session.objects.values())
    assert api.get(f"/api/sessions/{session_id}/").status_code == 404
    assert list(Session.objects.values()) == before
