"""The admin's changelists over tables of millions (issue 11): no unfiltered total, a
count that is PostgreSQL's estimate beyond ``EXACT_COUNT_LIMIT`` for those who see
everyone's rows (and says "about"), an owner filter that does not list every owner, a
date hierarchy from the first and last row, and an action filter from the registry."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from bulkops import counting
from bulkops.admin.sessions import SessionAdmin
from bulkops.models import BulkOperation, Session

pytestmark = pytest.mark.django_db
SESSIONS = reverse("admin:bulkops_session_changelist")
OPERATIONS = reverse("admin:bulkops_bulkoperation_changelist")


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user("root", superuser=True))
    return client


def seed(owner, count: int, *, prefix: str = "s", start=None) -> None:
    start = start or datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)
    Session.objects.bulk_create(
        Session(
            id=f"{prefix}-{n:04d}",
            owner=owner,
            title=f"Title {n}",
            created_at=start + datetime.timedelta(hours=n),
        )
        for n in range(count)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE bulkops_session")


def session_sql(client, url: str) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return response, [q["sql"] for q in captured.captured_queries if "bulkops_" in q["sql"]]


def test_the_session_changelist_never_counts_the_whole_table(admin_client, owner, monkeypatch):
    monkeypatch.setattr(counting, "EXACT_COUNT_LIMIT", 5)
    seed(owner, 30)
    response, queries = session_sql(admin_client, SESSIONS)
    cl = response.context["cl"]
    assert cl.show_full_result_count is False and cl.full_result_count is None
    assert len(cl.result_list) == 30
    assert not any("DISTINCT" in sql for sql in queries), queries  # no owner list
    html = response.content.decode()
    if connection.vendor == "postgresql":
        assert not any(sql.startswith("SELECT COUNT(*)") for sql in queries), queries
        assert cl.paginator.count_is_estimate is True
        assert f"about {cl.result_count} sessions" in html
    else:  # no planner estimate on SQLite: counted
        assert cl.result_count == 30 and "30 sessions" in html and "about" not in html


def test_a_staff_users_own_changelist_counts_exactly(client, make_user, monkeypatch):
    monkeypatch.setattr(counting, "EXACT_COUNT_LIMIT", 5)
    staff = make_user("clerk", staff=True)
    client.force_login(staff)
    seed(staff, 12)
    response = client.get(SESSIONS)
    assert response.context["cl"].result_count == 12
    assert response.context["cl"].paginator.count_is_estimate is False
    assert "By owner" not in response.content.decode()


def test_everyones_sessions_sort_only_by_indexed_columns_a_users_own_by_any(
    admin_client, client, make_user, owner
):
    seed(owner, 3)
    html = admin_client.get(SESSIONS).content.decode()
    for column in ("id", "title", "created"):
        assert f'class="sortable column-{column}' in html
    for column in ("owner", "state", "size"):
        assert f'class="column-{column}"' in html  # a header, not a sort link
    # A forged sort by a column left out is ignored, not run over every row.
    status_index = SessionAdmin.list_display.index("state")
    forged = admin_client.get(SESSIONS + f"?o={status_index}")
    assert forged.status_code == 200
    assert "status" not in str(forged.context["cl"].queryset.query.order_by)
    assert [s.pk for s in forged.context["cl"].result_list] == ["s-0002", "s-0001", "s-0000"]
    clerk = make_user("clerk", staff=True)
    seed(clerk, 2, prefix="c")
    client.force_login(clerk)
    own = client.get(SESSIONS).content.decode()
    assert 'class="sortable column-state' in own and 'class="sortable column-size' in own


def test_the_owner_filter_is_typed_in_not_listed(admin_client, owner, stranger):
    seed(owner, 3)
    seed(stranger, 2, prefix="t")
    response, queries = session_sql(
        admin_client, SESSIONS + f"?owner={stranger.pk}&status__exact=active"
    )
    assert {s.pk for s in response.context["cl"].result_list} == {"t-0000", "t-0001"}
    assert not any("DISTINCT" in sql for sql in queries), queries
    html = response.content.decode()
    assert "By owner" in html and 'name="owner"' in html
    assert f'value="{stranger.pk}"' in html
    assert 'type="hidden" name="status__exact" value="active"' in html  # kept on submit
    nobody = admin_client.get(SESSIONS + "?owner=alice")
    assert list(nobody.context["cl"].result_list) == []


def test_the_date_hierarchy_spans_the_first_to_the_last_row(admin_client, owner):
    seed(owner, 1, prefix="old", start=datetime.datetime(2022, 3, 1, tzinfo=datetime.UTC))
    seed(owner, 1, prefix="new", start=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC))
    html = admin_client.get(SESSIONS).content.decode()
    for year in ("2022", "2023", "2024"):  # 2023 has no row: offered, shows an empty list
        assert f"created_at__year={year}" in html
    assert "created_at__year=2021" not in html and "created_at__year=2025" not in html
    months = admin_client.get(SESSIONS + "?created_at__year=2022").content.decode()
    assert "created_at__month=3" in months and "created_at__month=4" not in months
    rows = admin_client.get(SESSIONS + "?created_at__year=2024&created_at__month=5")
    assert [s.pk for s in rows.context["cl"].result_list] == ["new-0000"]


def test_the_operation_changelist_filters_by_action_from_the_registry(admin_client, owner):
    for action in ("close", "archive", "close"):
        BulkOperation.objects.create(user=owner, action=action, status="completed")
    response, queries = session_sql(admin_client, OPERATIONS + "?action__exact=close")
    assert [op.action for op in response.context["cl"].result_list] == ["close", "close"]
    assert not any("DISTINCT" in sql for sql in queries), queries
    html = response.content.decode()
    assert "?action__exact=archive" in html and "?action__exact=export" in html
    assert response.context["cl"].show_full_result_count is False
