"""Management commands: seed_demo and bulk (the operators' command line)."""

import io
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count, Max, Min

from bulkops.models import BulkOperation, Session, SessionExport
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_users_and_sessions_in_every_state(tmp_path, settings):
    settings.BASE_DIR = tmp_path
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    users = set(get_user_model().objects.values_list("username", flat=True))
    assert users == {"admin", "staff", "demo", "alice"}
    demo = Session.objects.filter(owner__username="demo")
    assert demo.count() == 300
    assert set(demo.values_list("status", flat=True)) == {
        "active",
        "closed",
        "archived",
        "processing",
    }
    assert demo.filter(deleted_at__isnull=False).exists()
    assert SessionExport.objects.exists()
    assert "demo / " in out.getvalue()
    assert (tmp_path / "var" / "demo_credentials.json").exists()
    again = io.StringIO()
    call_command("seed_demo", stdout=again)
    assert "already exist" in again.getvalue()
    assert Session.objects.filter(owner__username="demo").count() == 300


def test_seed_demo_with_sessions_creates_n_for_a_user():
    call_command(
        "seed_demo",
        sessions=2500,
        user="bench",
        content_bytes=100,
        all_active=True,
        stdout=io.StringIO(),
    )
    qs = Session.objects.filter(owner__username="bench")
    assert qs.count() == 2500
    assert set(qs.values_list("status", flat=True)) == {"active"}
    assert len(qs.first().content) == 100


def test_bulk_command_creates_an_operation_the_worker_runs(owner, make_session):
    ids = [make_session(owner).pk for _ in range(3)]
    out = io.StringIO()
    call_command("bulk", "close", user="owner", ids=ids, reason="cli test", stdout=out)
    op = BulkOperation.objects.get()
    assert (op.source, op.total, op.reason, op.status) == ("cli", 3, "cli test", "pending")
    assert op.pk in out.getvalue()
    run_worker()
    op.refresh_from_db()
    assert op.status == "completed"
    assert Session.objects.filter(status="closed").count() == 3


def test_bulk_command_wait_prints_progress_and_summary(owner, make_session):
    import bulkops.management.commands.bulk as bulk_module
    from bulkops.engine import operation_create, operation_execute

    ids = [make_session(owner).pk for _ in range(2)]

    def create_and_run(**kwargs):
        # Stands in for the worker of another process: runs the operation at once,
        # so --wait sees it through to the end.
        op = operation_create(**kwargs)
        operation_execute(operation_id=op.pk)
        return op

    with mock.patch.object(bulk_module, "operation_create", create_and_run):
        out = io.StringIO()
        call_command("bulk", "export", user="owner", ids=ids, format="json", wait=True, stdout=out)
    text = out.getvalue()
    assert "100.0%" in text
    assert "completed: 2 succeeded" in text
    assert "File: " in text and text.strip().endswith(".json")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (["close"], {"user": "nobody", "ids": ["a"]}, "No user named"),
        (["close"], {"user": "owner", "ids": ["../x"]}, "Malformed"),
        (["close"], {"user": "owner", "filter": ["status"]}, "key=value"),
        (["close"], {"user": "owner", "filter": ["colour=red"]}, "Unknown filter keys"),
    ],
)
def test_bulk_command_bad_input_is_a_clear_error(owner, args, kwargs, message):
    with pytest.raises(CommandError, match=message):
        call_command("bulk", *args, stdout=io.StringIO(), **kwargs)
    assert not BulkOperation.objects.exists()


def test_seed_demo_with_owners_spreads_sessions_set_based():
    """``--sessions N --owners M``: one INSERT … SELECT per million rows (generate_series
    on PostgreSQL, a recursive CTE on SQLite): every state, soft-deleted rows, years of
    created_at, titles with searchable words, a skewed spread over the owners."""
    out = io.StringIO()
    call_command("seed_demo", sessions=3000, owners=6, years=3, stdout=out, stderr=io.StringIO())
    assert "Created 3,000 sessions" in out.getvalue()
    owners = get_user_model().objects.filter(username__startswith="scale-owner-")
    assert owners.count() == 6 and not any(u.has_usable_password() for u in owners)
    rows = Session.objects.filter(owner__in=owners)
    assert rows.count() == 3000
    shares = sorted((rows.filter(owner=o).count() for o in owners), reverse=True)
    assert shares[0] > 2 * shares[-1] and sum(shares) == 3000  # skewed, every row owned
    statuses = dict(rows.values_list("status").annotate(n=Count("pk")))
    assert set(statuses) == {"active", "closed", "archived", "processing"}
    assert 0.5 < statuses["active"] / 3000 < 0.7
    assert 0.01 < rows.filter(deleted_at__isnull=False).count() / 3000 < 0.08
    assert rows.filter(status="closed", closed_at__isnull=True).count() == 0
    span = rows.aggregate(first=Min("created_at"), last=Max("created_at"))
    assert (span["last"] - span["first"]).days > 2 * 365
    assert rows.filter(title__icontains="budget").exists()
    assert rows.filter(title__endswith=" #1234").count() == 1


@pytest.mark.parametrize(
    "options",
    [{"owners": 5}, {"sessions": 3, "owners": 5}, {"sessions": 10, "owners": 2, "years": 0}],
)
def test_seed_demo_with_owners_refuses_nonsense(options):
    with pytest.raises(CommandError):
        call_command("seed_demo", stdout=io.StringIO(), **options)
    assert not Session.objects.exists()
