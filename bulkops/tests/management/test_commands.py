"""Management commands: seed_demo and bulk (the operators' command line)."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from bulkops.models import BulkOperation, Session, SessionExport
from bulkops.tests.support.cli import worker_while_waiting
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
    ids = [make_session(owner).pk for _ in range(2)]
    with worker_while_waiting():
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
