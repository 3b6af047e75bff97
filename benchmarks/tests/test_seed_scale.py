"""``manage.py seed_scale``: tables of millions over skewed owners, set-based."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count, Max, Min

from benchmarks.management.commands import seed_scale as command
from bulkops.models import Session

pytestmark = pytest.mark.django_db


def seed_scale(**options):
    return call_command(command.Command(), **options)


def test_seed_scale_spreads_sessions_over_skewed_owners_set_based():
    """``seed_scale --sessions N --owners M``: one INSERT … SELECT per million rows (generate_series
    on PostgreSQL, a recursive CTE on SQLite): every state, soft-deleted rows, years of
    created_at, titles with searchable words, a skewed spread over the owners."""
    out = io.StringIO()
    seed_scale(sessions=3000, owners=6, years=3, stdout=out, stderr=io.StringIO())
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
    [
        {"sessions": 0, "owners": 1},
        {"sessions": 3, "owners": 5},
        {"sessions": 10, "owners": 2, "years": 0},
    ],
)
def test_seed_scale_refuses_nonsense(options):
    with pytest.raises(CommandError):
        seed_scale(stdout=io.StringIO(), **options)
    assert not Session.objects.exists()
