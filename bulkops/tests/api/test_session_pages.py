"""GET /api/sessions/ over many rows: a user's own list counts exactly (page/page_size
as ever); staff listing everyone's get an estimated ``count`` beyond
``EXACT_COUNT_LIMIT`` on PostgreSQL, labelled ``count_is_estimate``, while ``next`` and
``previous`` stay exact and any page (page 1,000 too) can be reached."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from bulkops import counting
from bulkops.models import Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import token_client

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def many(owner, count: int, *, prefix: str = "m") -> list[str]:
    """``count`` live sessions of ``owner``, newest first in the returned order."""
    now = timezone.now()
    Session.objects.bulk_create(
        Session(
            id=f"{prefix}-{n:05d}",
            owner=owner,
            title=f"Session {n}",
            created_at=now - datetime.timedelta(seconds=n),
        )
        for n in range(count)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE bulkops_session")  # the estimate reads the statistics
    return [f"{prefix}-{n:05d}" for n in range(count)]


@pytest.fixture
def staff(make_user):
    return token_client(make_user("viewer", staff=True, perms=("bulkops.view_session",)))


def test_a_users_own_list_counts_exactly_with_links(api, owner, stranger, monkeypatch):
    monkeypatch.setattr(counting, "EXACT_COUNT_LIMIT", 5)
    expected = many(owner, 30)
    many(stranger, 3, prefix="x")
    body = api.get("/api/sessions/?page_size=10&page=2").json()
    assert (body["count"], body["count_is_estimate"]) == (30, False)
    assert [row["id"] for row in body["results"]] == expected[10:20]
    assert body["next"].endswith("page=3&page_size=10")
    assert "page_size=10" in body["previous"] and "page=2" not in body["previous"]
    last = api.get("/api/sessions/?page_size=10&page=3").json()
    assert last["next"] is None and [r["id"] for r in last["results"]] == expected[20:]
    assert api.get("/api/sessions/?page_size=10&page=4").status_code == 404


def test_staff_wide_count_is_a_labelled_estimate_beyond_the_limit(staff, owner, monkeypatch):
    monkeypatch.setattr(counting, "EXACT_COUNT_LIMIT", 10)
    expected = many(owner, 60)
    body = staff.get("/api/sessions/?page_size=20").json()
    assert [row["id"] for row in body["results"]] == expected[:20]
    assert body["next"].endswith("page=2&page_size=20") and body["previous"] is None
    if connection.vendor == "postgresql":
        # The planner's figure from the statistics: labelled, and near the truth here.
        assert body["count_is_estimate"] is True
        assert 30 <= body["count"] <= 120
    else:  # SQLite has no planner estimate: it counts
        assert (body["count"], body["count_is_estimate"]) == (60, False)


def test_staff_wide_last_page_makes_the_count_exact(staff, owner, monkeypatch):
    monkeypatch.setattr(counting, "EXACT_COUNT_LIMIT", 10)
    expected = many(owner, 45)
    last = staff.get("/api/sessions/?page_size=20&page=3").json()
    assert [row["id"] for row in last["results"]] == expected[40:]
    assert (last["count"], last["count_is_estimate"], last["next"]) == (45, False, None)
    assert last["previous"].endswith("page=2&page_size=20")
    assert staff.get("/api/sessions/?page_size=20&page=4").status_code == 404


def test_staff_wide_below_the_limit_counts_exactly(staff, owner, stranger):
    many(owner, 4)
    many(stranger, 3, prefix="x")
    body = staff.get("/api/sessions/?page_size=2").json()
    assert (body["count"], body["count_is_estimate"]) == (7, False)
    assert body["next"].endswith("page=2&page_size=2")


def test_page_1000_is_reachable_and_deep_pages_keep_the_order(staff, owner):
    expected = many(owner, 2005)
    page = staff.get("/api/sessions/?page_size=2&page=1000").json()
    # offset 1,998 is past DEEP_PAGE_OFFSET: the page's keys are read first, then rows
    assert [row["id"] for row in page["results"]] == expected[1998:2000]
    assert page["results"][0]["owner"] == owner.username  # the joins came with the rows
    assert page["next"].endswith("page=1001&page_size=2")
    last = staff.get("/api/sessions/?page_size=2&page=1003").json()
    assert [row["id"] for row in last["results"]] == expected[2004:]
    assert last["next"] is None


def test_the_page_size_and_page_rules_are_unchanged(staff):
    assert staff.get("/api/sessions/?page_size=0").status_code == 400
    assert staff.get("/api/sessions/?page=0").status_code == 404
    assert staff.get("/api/sessions/?page=x").status_code == 404
    assert staff.get("/api/sessions/?page=2").status_code == 404
