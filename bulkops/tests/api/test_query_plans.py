"""The paths that must not grow with the table (issue 11), as PostgreSQL plans them:
every session query a request runs is answered through an index, and none counts the
whole table.

How the plans are made meaningful: 20,000 sessions over 20 owners are seeded with the
scale seeder and analysed, and then every captured query is explained with
``enable_seqscan = off``. On a table this small a sequential scan is legitimately the
cheapest plan for some queries, so without that setting the test would be asserting the
planner's cost arithmetic for 20,000 rows, which is neither stable nor what matters. With
it, the planner still falls back to a sequential scan when *no index can answer the
query at all* (a ``DISTINCT`` over whole rows, ``UPPER(title) LIKE`` without the
trigram index, a ``COUNT(*)`` over everything). That is the failure that makes a path
grow with the table, and it is what these tests catch. Times are the benchmark's
business (``bulkops_bench --table-size``), never asserted here.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from benchmarks.scaleseed import OWNER_PREFIX, seed_scale
from bulkops.models import Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import post_json, token_client

pytestmark = [
    # Committed rows: the seeder's VACUUM sets the visibility map (index-only scans).
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,  # PostgreSQL's planner
]
fast_password_hasher = support.fast_password_hasher
SESSIONS = 20_000
#: As at 10 million rows over 10,000 owners, one owner has a small share of the table.
OWNERS = 200
#: The btree indexes that lead with the owner.
OWNER_BTREE_INDEXES = (
    "session_owner_status_del",
    "session_owner_created",
    "session_owner_live_title",
)


@pytest.fixture
def table(django_user_model):
    seed_scale(sessions=SESSIONS, owners=OWNERS)
    owners = django_user_model.objects.filter(username__startswith=OWNER_PREFIX)
    return owners.order_by("pk")[OWNERS // 2]  # the median owner: ~1/300 of the rows


def session_queries(client_call) -> list[str]:
    """The SQL of every query on the session table that ``client_call()`` ran."""
    with CaptureQueriesContext(connection) as captured:
        response = client_call()
    assert response.status_code in (200, 400), response.content
    return [q["sql"] for q in captured.captured_queries if '"bulkops_session"' in q["sql"]]


def plan(sql: str, *, bitmaps: bool = True) -> str:
    """The plan PostgreSQL would use for ``sql`` when any index can answer it (without
    ``bitmaps``: an index read in order, which is the only way an index-only scan shows
    on a table this small, where a bitmap of a few pages is cheaper)."""
    settings = ["enable_seqscan"] + ([] if bitmaps else ["enable_bitmapscan"])
    with connection.cursor() as cursor:
        for name in settings:
            cursor.execute(f"SET {name} = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        found = cursor.fetchone()[0]
        for name in settings:
            cursor.execute(f"RESET {name}")
    return json.dumps(found if not isinstance(found, str) else json.loads(found))


def assert_indexed(queries: list[str], *indexes: str) -> str:
    """No query scans the session table sequentially; ``indexes`` all appear; return
    every plan (to assert more)."""
    assert queries, "the request ran no session query"
    plans = [plan(sql) for sql in queries if not sql.startswith("EXPLAIN")]
    for sql, shown in zip(queries, plans, strict=False):
        assert '"Seq Scan"' not in shown or '"bulkops_session"' not in _seq_relations(shown), sql
    joined = "\n".join(plans)
    if os.environ.get("SHOW_PLANS"):
        print(*queries, *plans, sep="\n")
    for index in indexes:
        assert f'"Index Name": "{index}"' in joined, (index, joined)
    return joined


def _seq_relations(shown: str) -> str:
    return " ".join(re.findall(r'"Node Type": "Seq Scan"[^}]*?"Relation Name": "(\w+)"', shown))


def assert_no_unbounded_count(queries: list[str]) -> None:
    for sql in queries:
        if sql.startswith("SELECT COUNT(*)"):
            assert "LIMIT" in sql, f"counts every matching row: {sql}"


@pytest.fixture
def staff(django_user_model, make_user):
    return token_client(make_user("viewer", staff=True, perms=("bulkops.view_session",)))


def test_a_users_first_page_with_status_ordering_and_search_uses_indexes(table):
    client = token_client(table)
    queries = session_queries(lambda: client.get("/api/sessions/"))
    # Any index leading with the owner (which one depends on the owner's row count).
    assert re.search(r'"Index Cond": "\(+owner_id = ', assert_indexed(queries))
    queries = session_queries(lambda: client.get("/api/sessions/?status=closed"))
    assert_indexed(queries)
    assert not any("DISTINCT" in sql for sql in queries)
    assert_indexed(session_queries(lambda: client.get("/api/sessions/?ordering=title")))
    assert_indexed(session_queries(lambda: client.get("/api/sessions/?search=budget")))


def test_staff_list_of_everyone_reads_the_live_index_and_never_counts_it_all(staff, table):
    queries = session_queries(lambda: staff.get("/api/sessions/"))
    assert_indexed(queries, "session_live_created")
    assert_no_unbounded_count(queries)
    deep = session_queries(lambda: staff.get("/api/sessions/?page=300"))
    plans = assert_indexed(deep, "session_live_created")
    assert '"Node Type": "Index Only Scan"' in plans  # the deep page's keys
    assert_no_unbounded_count(deep)
    closed = session_queries(lambda: staff.get("/api/sessions/?status=closed"))
    assert_indexed(closed)
    assert_no_unbounded_count(closed)


def test_search_across_everyone_uses_the_trigram_indexes(staff, table):
    # A title number is in one title only: the trigram indexes (owner-led; here on their
    # second column alone) find it.
    queries = session_queries(lambda: staff.get("/api/sessions/?search=%2312345"))
    assert_indexed(queries, "session_owner_title_trgm", "session_owner_id_trgm")
    body = staff.get("/api/sessions/?search=%2312345").json()
    assert [row["title"].endswith("#12345") for row in body["results"]] == [True]
    assert_no_unbounded_count(queries)


def test_a_users_search_is_one_scan_of_the_owner_led_trigram_indexes(table):
    # On 20,000 rows the planner rightly filters a small owner's rows from a btree
    # index; what matters at 10M is that the owner is looked up in the search's own GIN
    # index (not the owner's rows intersected with every row holding the word: at 10M,
    # 330 → 3 ms), so the plan is asked for with the owner-led btree indexes out of the way.
    client = token_client(table)
    queries = session_queries(lambda: client.get("/api/sessions/?search=%23"))
    with transaction.atomic():
        with connection.cursor() as cursor:
            for index in OWNER_BTREE_INDEXES:
                cursor.execute(f"DROP INDEX {index}")
        plans = assert_indexed(queries)
        transaction.set_rollback(True)
    assert re.search(r'"Index Name": "session_owner_(title|id)_trgm"', plans)
    assert re.search(r'"Index Cond": "\(+owner_id = \d+', plans)
    rows = client.get("/api/sessions/?search=%23&page_size=200").json()
    expected = Session.objects.filter(owner=table, deleted_at__isnull=True, title__contains="#")
    assert rows["count"] == expected.count() > 0


def test_ordering_by_title_reads_a_title_index_in_order(staff, table):
    client = token_client(table)
    for caller, index in ((client, "session_owner_live_title"), (staff, "session_live_title")):
        for ordering in ("title", "-title"):
            url = f"/api/sessions/?ordering={ordering}"
            queries = session_queries(lambda c=caller, u=url: c.get(u))
            page = [q for q in queries if "ORDER BY" in q]
            assert page and f'"Index Name": "{index}"' in plan(page[-1], bitmaps=False)
            assert '"Node Type": "Sort"' not in plan(page[-1], bitmaps=False)


def test_info_counts_a_users_sessions_from_the_index_alone(table):
    client = token_client(table)
    queries = session_queries(lambda: client.get("/api/bulk/sessions/info"))
    assert_indexed(queries, "session_owner_status_del")
    in_order = plan(queries[0], bitmaps=False)
    assert '"Node Type": "Index Only Scan"' in in_order
    counts = client.get("/api/bulk/sessions/info").json()["sessions"]
    own = Session.objects.filter(owner=table)
    assert counts["total"] == own.count()
    assert counts["deleted"] == own.filter(deleted_at__isnull=False).count()
    assert counts["closed"] == own.filter(status="closed", deleted_at__isnull=True).count()


def test_validate_over_the_cap_counts_a_bounded_number_of_rows(make_user, table, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    staff = token_client(make_user("closer", staff=True, perms=("bulkops.change_session",)))
    body = {"action": "close", "filter": {"status": "active"}}
    queries = session_queries(lambda: post_json(staff, "/api/bulk/sessions/validate", body))
    assert_indexed(queries)
    assert_no_unbounded_count(queries)
    response = post_json(staff, "/api/bulk/sessions/validate", body)
    assert response.status_code == 400
    assert "matches more than 1000 sessions" in json.dumps(response.json())


def test_no_session_or_operation_index_serves_only_prefix_searches():
    """Every index on the session table is written with each session changed: none may
    exist that no query reads. The ``varchar_pattern_ops`` copy Django adds to a text
    primary key serves only ``id LIKE 'abc%'``, which nothing runs (id searches are
    ``icontains``, answered by the trigram indexes above)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexname FROM pg_indexes WHERE tablename = ANY(%s) "
            "AND indexdef LIKE %s",
            [["bulkops_session", "bulkops_bulkoperation"], "%varchar_pattern_ops%"],
        )
        assert cursor.fetchall() == []


def _plan_nodes(node: dict) -> list[dict]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


def test_the_active_cap_reads_only_a_users_unfinished_operations(make_user):
    """Every start counts the user's unfinished operations: the count may not read the
    operations the user finished, however many (it once filtered them all by status)."""
    from bulkops.models import BulkOperation, OperationStatus
    from bulkops.selectors import active_operations_count

    user = make_user("busy")
    finished = [OperationStatus.COMPLETED, OperationStatus.PARTIAL, OperationStatus.FAILED]
    BulkOperation.objects.bulk_create(
        BulkOperation(user=user, action="close", status=finished[n % 3]) for n in range(1500)
    )
    for status in (OperationStatus.PENDING, OperationStatus.RUNNING, OperationStatus.PAUSED):
        BulkOperation.objects.create(user=user, action="close", status=status)
    with CaptureQueriesContext(connection) as captured:
        assert active_operations_count(user=user) == 3
    (sql,) = [q["sql"] for q in captured.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        found = cursor.fetchone()[0]
    nodes = _plan_nodes((found if not isinstance(found, str) else json.loads(found))[0]["Plan"])
    assert [n.get("Index Name") for n in nodes if "Index Name" in n] == ["operation_user_active"]
    assert sum(n.get("Rows Removed by Filter", 0) for n in nodes) == 0
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes)
