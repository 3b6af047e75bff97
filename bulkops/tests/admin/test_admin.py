"""The admin: SessionAdmin's bulk actions (two passes), select-all, permissions, limits,
the progress page and BulkOperationAdmin — through the Django test client."""

from __future__ import annotations

import csv
import datetime
import io
import json

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from bulkops.admin.sessions import SessionAdmin
from bulkops.engine import Selection, operation_create
from bulkops.models import BulkOperation, Session, SessionExport
from bulkops.tests.support.helpers import execute, run_worker

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:bulkops_session_changelist"
ALL_ACTIONS = {
    "close_sessions",
    "archive_sessions",
    "soft_delete_sessions",
    "hard_delete_sessions",
    "restore_sessions",
    "export_sessions_csv",
    "export_sessions_json",
}


def changelist(query: str = "") -> str:
    return reverse(CHANGELIST) + query


def first_pass(client, action, ids=(), *, query="", select_across=False):
    """What the changelist's action bar posts."""
    return client.post(
        changelist(query),
        {
            "action": action,
            "index": "0",
            "select_across": "1" if select_across else "0",
            "_selected_action": list(ids),
        },
    )


def confirm(client, action, ids=(), *, query="", select_across=False, **fields):
    """What the confirmation page's Confirm button posts."""
    return client.post(
        changelist(query),
        {
            "action": action,
            "post": "yes",
            "_bulk_confirm": "1",
            "select_across": "1" if select_across else "0",
            "_selected_action": list(ids),
            **fields,
        },
    )


def offered_actions(client, query: str = "") -> set[str]:
    response = client.get(changelist(query))
    assert response.status_code == 200
    return {name for name, _ in response.context["action_form"].fields["action"].choices if name}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def snapshot():
    return list(
        Session.objects.order_by("pk").values_list(
            "pk", "status", "deleted_at", "closed_at", "archived_at", "content"
        )
    )


@pytest.fixture
def trio(make_session, owner):
    """One eligible, one skipped-or-ineligible per action, one processing session."""
    return {
        "active": make_session(owner, id="s-active", content="a" * 300),
        "closed": make_session(owner, id="s-closed", status="closed"),
        "archived": make_session(owner, id="s-archived", status="archived"),
        "processing": make_session(owner, id="s-processing", status="processing"),
        "deleted": make_session(owner, id="s-deleted", deleted=True),
    }


# --- SessionAdmin: list, filters ----------------------------------------------------------
def test_changelist_hides_soft_deleted_sessions_unless_asked(admin_client, trio):
    default = admin_client.get(changelist())
    shown = {s.pk for s in default.context["cl"].result_list}
    assert "s-deleted" not in shown and "s-active" in shown
    only_deleted = admin_client.get(changelist("?deleted=yes"))
    assert {s.pk for s in only_deleted.context["cl"].result_list} == {"s-deleted"}
    everything = admin_client.get(changelist("?deleted=all"))
    assert len(everything.context["cl"].result_list) == 5


def test_changelist_shows_columns_filters_search_and_date_hierarchy(
    admin_client, trio, make_session, stranger
):
    make_session(stranger, id="s-stranger")
    response = admin_client.get(changelist("?q=s-clo&status__exact=closed"))
    assert [s.pk for s in response.context["cl"].result_list] == ["s-closed"]
    html = response.content.decode()
    for text in ("Owner", "Status", "Deleted", "Size", "By status", "By deleted", "By owner"):
        assert text.lower() in html.lower()
    assert response.context["cl"].date_hierarchy == "created_at"


def test_deletion_is_shown_only_on_a_deleted_session(admin_client, trio):
    html = admin_client.get(changelist("?deleted=all")).content.decode()
    table = html.split('id="result_list"')[1].split("</table>")[0]
    rows = {
        row.split('href="')[1].split("/change/")[0].rsplit("/", 1)[-1]: row
        for row in table.split("<tr")[2:]
    }
    assert set(rows) == {"s-active", "s-closed", "s-archived", "s-processing", "s-deleted"}
    assert [sid for sid, row in rows.items() if "bulkops-deleted" in row] == ["s-deleted"]
    assert "icon-no.svg" not in table and "icon-yes.svg" not in table  # no ✖ on live rows


def test_archive_sizes_are_read_only(admin_client, trio):
    response = admin_client.get(reverse("admin:bulkops_session_change", args=["s-active"]))
    form_fields = response.context["adminform"].form.fields
    assert "archive_original_size" not in form_fields
    assert "archive_compressed_size" not in form_fields
    assert "archive_original_size" in response.context["adminform"].readonly_fields


def test_the_change_form_cannot_reassign_or_change_state(client, make_user, make_session):
    """Owner, status and lifecycle go through bulk operations only: a staff member with
    ``change_session`` posting them on the change form changes the title, nothing else."""
    staff = make_user(
        "editor", staff=True, perms=("bulkops.view_session", "bulkops.change_session")
    )
    victim = make_user("victim")
    session = make_session(make_user("ada"), id="s-edit", status="archived", content="")
    client.force_login(staff)
    url = reverse("admin:bulkops_session_change", args=["s-edit"])
    page = client.get(url).content.decode()
    for field in ("owner", "status", "closed_at", "content"):
        assert f'name="{field}"' not in page, field
    response = client.post(
        url,
        {
            "title": "Renamed",
            "metadata": "{}",
            "owner": str(victim.pk),
            "status": "active",
            "closed_at_0": "2024-01-01",
            "closed_at_1": "00:00:00",
            "content": "resurrected",
        },
    )
    assert response.status_code == 302, response.content[:500]
    after = Session.objects.get(pk="s-edit")
    assert after.title == "Renamed"
    assert (after.owner_id, after.status, after.closed_at, after.content) == (
        session.owner_id,
        "archived",
        None,
        "",
    )


def test_staff_without_view_permission_sees_only_their_own_sessions(
    make_user, make_session, client, owner
):
    staff = make_user("helper", staff=True)
    make_session(owner, id="s-theirs")
    make_session(staff, id="s-mine")
    client.force_login(staff)
    response = client.get(changelist())
    assert [s.pk for s in response.context["cl"].result_list] == ["s-mine"]


# --- which actions a staff user sees (DESIGN §4) -----------------------------------------------
@pytest.mark.parametrize(
    ("perms", "expected"),
    [
        # Own sessions only: every action but hard delete, which always needs its permission.
        ((), ALL_ACTIONS - {"hard_delete_sessions"}),
        # Everyone's sessions in view: only what the permissions allow on them.
        (("bulkops.view_session",), {"export_sessions_csv", "export_sessions_json"}),
        (
            ("bulkops.view_session", "bulkops.change_session"),
            {
                "close_sessions",
                "archive_sessions",
                "restore_sessions",
                "export_sessions_csv",
                "export_sessions_json",
            },
        ),
        (
            ("bulkops.view_session", "bulkops.delete_session"),
            {"soft_delete_sessions", "export_sessions_csv", "export_sessions_json"},
        ),
        (
            ("bulkops.view_session", "bulkops.delete_session", "bulkops.hard_delete_session"),
            {
                "soft_delete_sessions",
                "hard_delete_sessions",
                "export_sessions_csv",
                "export_sessions_json",
            },
        ),
    ],
)
def test_staff_sees_the_actions_their_permissions_allow(client, make_user, perms, expected):
    client.force_login(make_user("staffer", staff=True, perms=perms))
    assert offered_actions(client) == expected


def test_superuser_sees_every_bulk_action_and_not_djangos_delete_selected(admin_client):
    assert offered_actions(admin_client) == ALL_ACTIONS


def test_forged_post_of_a_hidden_action_is_403_and_changes_nothing(client, make_user, make_session):
    staff = make_user("staffer", staff=True, perms=("bulkops.view_session",))
    session = make_session(staff, id="s-mine")
    client.force_login(staff)
    before = snapshot()
    for post in (first_pass, confirm):
        assert post(client, "hard_delete_sessions", [session.pk]).status_code == 403
        assert post(client, "close_sessions", [session.pk]).status_code == 403
        assert post(client, "delete_selected", [session.pk]).status_code == 403
    assert snapshot() == before
    assert not BulkOperation.objects.exists()


def test_non_staff_cannot_reach_the_admin(client, owner, trio):
    client.force_login(owner)
    response = first_pass(client, "close_sessions", ["s-active"])
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Session.objects.get(pk="s-active").status == "active"


# --- every action: two passes -------------------------------------------------------------------
ACTION_CASES = [
    # (admin action, query, selected ids, extra confirm fields,
    #  expected eligible / skipped / ineligible counts on the confirmation page)
    ("close_sessions", "", ["s-active", "s-closed", "s-processing"], {}, (1, 1, 1)),
    ("archive_sessions", "", ["s-active", "s-archived", "s-processing"], {}, (1, 1, 1)),
    ("soft_delete_sessions", "", ["s-active", "s-processing"], {}, (1, 0, 1)),
    ("hard_delete_sessions", "", ["s-active", "s-processing"], {}, (1, 0, 1)),
    ("restore_sessions", "?deleted=all", ["s-deleted", "s-active", "s-processing"], {}, (1, 1, 1)),
    (
        "export_sessions_csv",
        "",
        ["s-active", "s-processing", "s-archived"],
        {"format": "csv"},
        (3, 0, 0),
    ),
    ("export_sessions_json", "", ["s-active", "s-closed"], {"format": "json"}, (2, 0, 0)),
]


@pytest.mark.parametrize(("action", "query", "ids", "fields", "counts"), ACTION_CASES)
def test_first_pass_shows_the_partition_and_changes_nothing(
    admin_client, trio, action, query, ids, fields, counts
):
    before = snapshot()
    response = first_pass(admin_client, action, ids, query=query)
    assert response.status_code == 200
    assert "admin/bulkops/bulk_confirmation.html" in [t.name for t in response.templates]
    result = response.context["result"]
    assert (result["eligible_count"], result["skipped_count"], result["ineligible_count"]) == counts
    html = response.content.decode()
    assert 'name="post"' in html and "Cancel" in html
    if "s-processing" in ids and action.startswith(("close", "archive", "soft", "hard", "rest")):
        assert "A pipeline is working on this session" in html
    assert snapshot() == before
    assert not BulkOperation.objects.exists()


@pytest.mark.parametrize("run_on", ["eligible", "all"])
@pytest.mark.parametrize(("action", "query", "ids", "fields", "counts"), ACTION_CASES)
def test_confirm_creates_an_admin_operation_that_the_worker_runs(
    admin_client, superuser, trio, action, query, ids, fields, counts, run_on
):
    """By default on the eligible sessions only (what the page previewed as skipped or
    not eligible is left out, and the run ends completed); or on every selected one."""
    if run_on == "all":
        fields = {**fields, "run_on": "all"}
    response = confirm(admin_client, action, ids, query=query, reason="ticket 42", **fields)
    op = BulkOperation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])
    eligible, skipped, ineligible = counts
    total = len(ids) if run_on == "all" else eligible
    assert (op.source, op.user, op.reason, op.total) == ("admin", superuser, "ticket 42", total)
    run_worker()
    op.refresh_from_db()
    if run_on == "all":
        assert (op.succeeded, op.skipped, op.failed) == (eligible, skipped, ineligible)
        assert op.excluded == {}
    else:
        assert (op.status, op.succeeded, op.skipped, op.failed) == ("completed", eligible, 0, 0)
        left_out = {k: sum(g["count"] for g in v) for k, v in op.excluded.items()}
        assert left_out == {
            k: n for k, n in (("skipped", skipped), ("ineligible", ineligible)) if n
        }
    sessions = {s.pk: s for s in Session.objects.all()}
    assert sessions["s-processing"].status == "processing"
    if action == "close_sessions":
        assert sessions["s-active"].status == "closed" and sessions["s-active"].closed_at
    elif action == "archive_sessions":
        assert sessions["s-active"].status == "archived" and sessions["s-active"].content == ""
        assert sessions["s-active"].archive_original_size == 300
    elif action == "soft_delete_sessions":
        assert sessions["s-active"].deleted_at is not None
    elif action == "hard_delete_sessions":
        assert "s-active" not in sessions
    elif action == "restore_sessions":
        assert sessions["s-deleted"].deleted_at is None
    else:
        assert op.params["format"] == ("json" if "json" in action else "csv")
        download = admin_client.get(reverse("admin:bulkops_bulkoperation_download", args=[op.pk]))
        assert download.status_code == 200
        body = b"".join(download.streaming_content).decode()
        if op.params["format"] == "csv":
            rows = list(csv.DictReader(io.StringIO(body)))
            assert sorted(r["id"] for r in rows) == sorted(ids)
        else:
            assert sorted(r["id"] for r in json.loads(body)) == sorted(ids)


def test_export_format_can_be_changed_on_the_confirmation_page(admin_client, trio):
    page = first_pass(admin_client, "export_sessions_csv", ["s-active"])
    assert 'value="json"' in page.content.decode()
    confirm(admin_client, "export_sessions_csv", ["s-active"], format="json", include_details="on")
    op = BulkOperation.objects.get()
    assert op.params == {"format": "json", "include_details": True}


def test_hard_delete_preview_shows_the_exports_that_go_too(admin_client, owner, make_session):
    make_session(owner, id="s-exp", exports=2)
    kept = first_pass(admin_client, "hard_delete_sessions", ["s-exp"])
    assert kept.context["result"]["ineligible"][0]["reason"] == "has_exports"
    preview = confirm(
        admin_client, "hard_delete_sessions", ["s-exp"], post="", cascade_exports="on"
    )
    assert preview.status_code == 200
    assert preview.context["cascade"] == {"exports": 2}
    assert "2 exports of these sessions will be deleted too" in preview.content.decode()
    assert Session.objects.filter(pk="s-exp").exists() and SessionExport.objects.count() == 2
    confirm(admin_client, "hard_delete_sessions", ["s-exp"], cascade_exports="on")
    run_worker()
    assert not Session.objects.filter(pk="s-exp").exists()
    assert not SessionExport.objects.exists()


def test_soft_delete_preview_with_exports_says_it_cannot_be_undone(
    admin_client, owner, make_session
):
    make_session(owner, id="s-exp", exports=1)
    sentence = "A delete that removes the exports cannot be undone."
    assert (
        sentence not in first_pass(admin_client, "soft_delete_sessions", ["s-exp"]).content.decode()
    )
    preview = confirm(
        admin_client, "soft_delete_sessions", ["s-exp"], post="", cascade_exports="on"
    )
    page = preview.content.decode()
    assert "1 export of these sessions will be deleted too" in page and sentence in page
    assert SessionExport.objects.count() == 1


def test_a_reason_over_500_characters_is_refused_on_the_page(admin_client, trio):
    response = confirm(admin_client, "close_sessions", ["s-active"], reason="x" * 501)
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert not BulkOperation.objects.exists()
    assert Session.objects.get(pk="s-active").status == "active"


def test_confirm_sent_twice_starts_one_operation(admin_client, trio, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "close": "1/m"}
    page = first_pass(admin_client, "close_sessions", ["s-active"])
    token = page.context["confirm_token"]
    assert f'value="{token}"' in page.content.decode()
    first = confirm(admin_client, "close_sessions", ["s-active"], _bulk_token=token)
    again = confirm(admin_client, "close_sessions", ["s-active"], _bulk_token=token)
    op = BulkOperation.objects.get()
    assert first["Location"] == again["Location"] == progress(op)
    assert op.idempotency_key == f"admin-confirm:{token}"


def test_nothing_eligible_offers_no_confirm_button(admin_client, trio):
    response = first_pass(admin_client, "close_sessions", ["s-processing"])
    html = response.content.decode()
    assert "Nothing to do" in html and 'name="post"' not in html


# --- select all N matching: the filter, not one field per id ---------------------------------------
def bulk_sessions(owner, n, *, prefix="bulk", status="active", title="Bulk"):
    Session.objects.bulk_create(
        Session(id=f"{prefix}-{i:05d}", owner=owner, status=status, title=f"{title} {i}")
        for i in range(n)
    )


def test_select_all_over_1000_rows_sends_the_changelist_filter(admin_client, owner):
    bulk_sessions(owner, 1000)
    bulk_sessions(owner, 30, prefix="other", status="closed")
    query = "?status__exact=active&q=bulk"
    page_ids = [s.pk for s in admin_client.get(changelist(query)).context["cl"].result_list]
    # the page; "select all" means all 1000 matching rows
    assert len(page_ids) == SessionAdmin.list_per_page
    response = first_pass(admin_client, "close_sessions", page_ids, query=query, select_across=True)
    assert response.context["selection_filter"] == {
        "deleted": False,
        "status": "active",
        "search": "bulk",
    }
    assert response.context["result"]["eligible_count"] == 1000
    html = response.content.decode()
    # never one field per matching row
    assert html.count('name="_selected_action"') == SessionAdmin.list_per_page
    assert Session.objects.filter(status="closed").count() == 30
    confirm(admin_client, "close_sessions", page_ids, query=query, select_across=True)
    op = BulkOperation.objects.get()
    assert op.total == 1000
    run_worker()
    assert Session.objects.filter(status="closed").count() == 1030
    assert Session.objects.filter(status="active").count() == 0


def test_select_all_with_a_multi_word_search_uses_ids_derived_server_side(admin_client, owner):
    bulk_sessions(owner, 20, title="alpha beta")
    bulk_sessions(owner, 20, prefix="gamma", title="alpha only")
    query = "?q=alpha+beta"
    page_ids = [s.pk for s in admin_client.get(changelist(query)).context["cl"].result_list]
    response = first_pass(
        admin_client, "archive_sessions", page_ids, query=query, select_across=True
    )
    assert response.context["selection_filter"] is None
    assert response.context["result"]["eligible_count"] == 20
    confirm(admin_client, "archive_sessions", page_ids[:1], query=query, select_across=True)
    run_worker()
    assert Session.objects.filter(status="archived").count() == 20
    assert not Session.objects.filter(pk__startswith="gamma", status="archived").exists()


def test_select_all_maps_owner_and_date_hierarchy_filters(admin_client, owner, stranger):
    moment = datetime.datetime(2024, 3, 15, 12, tzinfo=datetime.UTC)
    Session.objects.bulk_create(
        [
            Session(id="march-owner", owner=owner, created_at=moment),
            Session(id="march-stranger", owner=stranger, created_at=moment),
            Session(id="april-owner", owner=owner, created_at=moment + datetime.timedelta(days=30)),
        ]
    )
    query = f"?owner={owner.pk}&created_at__year=2024&created_at__month=3"
    response = first_pass(
        admin_client, "close_sessions", ["march-owner"], query=query, select_across=True
    )
    assert response.context["selection_filter"] == {
        "deleted": False,
        "owner": str(owner.pk),
        "created_after": "2024-03-01T00:00:00+00:00",
        "created_before": "2024-04-01T00:00:00+00:00",
    }
    assert response.context["result"]["eligible_ids"] == ["march-owner"]


@pytest.fixture
def capped_client(client, make_user):
    """Staff with the session permissions but not ``bulkops.run_large_operation``: the
    cap holds for them (past it, see ``test_large_select_all.py``)."""
    perms = ("bulkops.view_session", "bulkops.change_session", "bulkops.delete_session")
    client.force_login(make_user("capped", staff=True, perms=perms))
    return client


def test_select_all_over_the_cap_is_refused_with_a_clear_message(capped_client, owner):
    admin_client = capped_client
    bulk_sessions(owner, 1001)
    response = first_pass(admin_client, "close_sessions", ["bulk-00000"], select_across=True)
    assert response.status_code == 302
    assert any(
        m == "More than 1000 sessions match the filter, and close takes at most 1000 at "
        "once. Narrow the filter and try again."
        for m in messages_of(response)
    )
    confirm(admin_client, "close_sessions", ["bulk-00000"], select_across=True)
    assert not BulkOperation.objects.exists()
    assert not Session.objects.filter(status="closed").exists()


def test_export_select_all_has_the_export_cap(capped_client, owner, settings):
    admin_client = capped_client
    bulk_sessions(owner, 1001)
    response = first_pass(admin_client, "export_sessions_csv", ["bulk-00000"], select_across=True)
    assert response.status_code == 200
    assert response.context["result"]["eligible_count"] == 1001
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 1000
    refused = first_pass(admin_client, "export_sessions_csv", ["bulk-00000"], select_across=True)
    assert any("at most 1000" in m for m in messages_of(refused))


def test_staff_select_all_stays_within_their_own_sessions(client, make_user, owner):
    staff = make_user("helper", staff=True, perms=("bulkops.change_session",))
    bulk_sessions(owner, 5, prefix="theirs")
    bulk_sessions(staff, 5, prefix="mine")
    client.force_login(staff)
    response = first_pass(client, "close_sessions", ["mine-00000"], select_across=True)
    assert response.context["selection_filter"]["owner"] == staff.pk
    confirm(client, "close_sessions", ["mine-00000"], select_across=True)
    run_worker()
    assert set(Session.objects.filter(status="closed").values_list("owner", flat=True)) == {
        staff.pk
    }


# --- limits: the API's rate limits and active-operation cap ----------------------------------------
def test_the_confirmation_page_shows_what_is_left_of_the_limits(admin_client, trio, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "close": "3/m"}
    page = first_pass(admin_client, "close_sessions", ["s-active"])
    assert page.context["rate_left"]["remaining"] == 3
    html = page.content.decode()
    assert "Rate limit: 3 of 3 close requests left in this window" in html
    assert "Your operations pending or running: 0 of at most 5." in html
    confirm(admin_client, "close_sessions", ["s-active"])
    again = first_pass(admin_client, "close_sessions", ["s-closed"])
    assert again.context["rate_left"]["remaining"] == 2
    assert "Your operations pending or running: 1 of at most 5." in again.content.decode()


def test_over_the_rate_limit_the_page_comes_back_with_the_form_kept(admin_client, trio, settings):
    """A Confirm the rate limit refuses starts nothing and shows the confirmation page
    again — the same selection, options and reason — with why, instead of losing them."""
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "close": "1/m"}
    confirm(admin_client, "close_sessions", ["s-active"])
    response = confirm(
        admin_client,
        "close_sessions",
        ["s-active", "s-processing"],
        reason="ticket 7",
        run_on="all",
    )
    assert response.status_code == 200
    assert BulkOperation.objects.count() == 1
    notice = response.context["refusal_notice"]
    assert notice.startswith("Nothing was done: Rate limit exceeded for close")
    html = response.content.decode()
    assert notice in html and "Rate limit reached" in html
    assert response.context["selected_ids"] == ["s-active", "s-processing"]
    assert response.context["form"]["reason"].value() == "ticket 7"
    assert "ticket 7</textarea>" in html
    assert 'value="all" checked' in html


def test_too_many_active_operations_keeps_the_page_too(admin_client, superuser, trio, settings):
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 1
    operation_create(user=superuser, action="close", selection=Selection(session_ids=["s-active"]))
    response = confirm(admin_client, "archive_sessions", ["s-active"], reason="why not")
    assert response.status_code == 200
    assert "operations pending or running" in response.context["refusal_notice"]
    assert "Your operations pending or running: 1 of at most 1." in response.content.decode()
    assert response.context["form"]["reason"].value() == "why not"
    assert BulkOperation.objects.count() == 1


# --- the progress page ------------------------------------------------------------------------
def progress(op):
    return reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])


def test_progress_page_shows_the_current_state_without_javascript(admin_client, superuser, trio):
    op = operation_create(
        user=superuser,
        action="close",
        selection=Selection(session_ids=["s-active", "s-processing"]),
    ).operation
    pending = admin_client.get(progress(op)).content.decode()
    assert 'http-equiv="refresh"' in pending and "Cancel operation" in pending
    run_worker()
    done = admin_client.get(progress(op)).content.decode()
    assert 'http-equiv="refresh"' not in done
    assert "s-processing" in done and "A pipeline is working on this session" in done
    assert "Retry failed items" in done and 'aria-valuenow="100"' in done


def test_status_json_is_the_operation_representation(admin_client, superuser, trio):
    op = execute(superuser, "close", ["s-active"])
    data = admin_client.get(reverse("admin:bulkops_bulkoperation_status", args=[op.pk])).json()
    assert (data["operation_id"], data["status"], data["progress"]) == (op.pk, "completed", 100)
    assert data["version"] == op.version


def test_cancel_from_the_progress_page(admin_client, superuser, trio):
    op = operation_create(
        user=superuser, action="close", selection=Selection(session_ids=["s-active"])
    ).operation
    response = admin_client.post(reverse("admin:bulkops_bulkoperation_cancel", args=[op.pk]))
    assert response.status_code == 302
    op.refresh_from_db()
    assert op.status == "cancelled"
    run_worker()
    assert Session.objects.get(pk="s-active").status == "active"


def test_retry_failed_items_starts_an_admin_operation_after_its_confirmation(
    admin_client, superuser, trio
):
    op = execute(superuser, "close", ["s-active", "s-processing"])
    Session.objects.filter(pk="s-processing").update(status="active")
    url = reverse("admin:bulkops_bulkoperation_retry", args=[op.pk])
    assert url in admin_client.get(progress(op)).content.decode()
    page = admin_client.get(url)
    assert page.context["result"]["eligible_ids"] == ["s-processing"]
    assert not BulkOperation.objects.exclude(pk=op.pk).exists()  # nothing yet
    response = admin_client.post(
        url,
        {
            "post": "yes",
            "_bulk_token": page.context["confirm_token"],
            "_bulk_selection_token": page.context["selection_token"],
        },
    )
    retry = BulkOperation.objects.exclude(pk=op.pk).get()
    assert response["Location"] == progress(retry)
    assert (retry.source, retry.total) == ("admin", 1)
    run_worker()
    assert Session.objects.get(pk="s-processing").status == "closed"


def test_other_staff_cannot_see_an_operation_but_superusers_can(
    client, make_user, owner, trio, superuser
):
    staff = make_user("helper", staff=True, perms=("bulkops.view_session",))
    theirs = execute(staff, "export", ["s-active"], format="csv")
    other = make_user("other", staff=True)
    client.force_login(other)
    for name in ("progress", "status", "download"):
        assert (
            client.get(reverse(f"admin:bulkops_bulkoperation_{name}", args=[theirs.pk])).status_code
            == 404
        )
    client.force_login(superuser)
    assert client.get(progress(theirs)).status_code == 200


def test_progress_page_links_the_export_download(admin_client, superuser, trio):
    op = execute(superuser, "export", ["s-active"], format="json")
    page = admin_client.get(progress(op)).content.decode()
    link = f"/api/download/{op.export_file}"
    assert f'href="{link}"' in page
    body = b"".join(admin_client.get(link).streaming_content)
    assert [r["id"] for r in json.loads(body)] == ["s-active"]


def test_admin_download_is_gone_after_expiry(admin_client, superuser, trio):
    op = execute(superuser, "export", ["s-active"], format="csv")
    url = reverse("admin:bulkops_bulkoperation_download", args=[op.pk])
    assert admin_client.get(url).status_code == 200
    BulkOperation.objects.filter(pk=op.pk).update(expires_at=timezone.now())
    assert admin_client.get(url).status_code == 410


# --- BulkOperationAdmin ----------------------------------------------------------------------------
def test_staff_see_their_own_operations_superusers_everyones(client, make_user, superuser, trio):
    staff = make_user("helper", staff=True, perms=("bulkops.view_session",))
    mine = execute(staff, "export", ["s-active"], format="csv")
    root_op = execute(superuser, "close", ["s-active"])
    url = reverse("admin:bulkops_bulkoperation_changelist")
    client.force_login(staff)
    assert [o.pk for o in client.get(url).context["cl"].result_list] == [mine.pk]
    detail = reverse("admin:bulkops_bulkoperation_change", args=[root_op.pk])
    assert client.get(detail).status_code == 302  # not found for this user: back to the index
    client.force_login(superuser)
    listed = client.get(url + "?source__exact=api&status__exact=completed")
    assert {o.pk for o in listed.context["cl"].result_list} == {mine.pk, root_op.pk}


def test_operation_detail_lists_items_filtered_by_outcome(admin_client, superuser, trio):
    op = execute(superuser, "close", ["s-active", "s-closed", "s-processing"])
    detail = reverse("admin:bulkops_bulkoperation_change", args=[op.pk])
    everything = admin_client.get(detail)
    assert everything.context["items_total"] == 3
    assert progress(op) in everything.content.decode()
    failed = admin_client.get(detail + "?outcome=failed")
    assert [i.session_id for i in failed.context["items_page"]] == ["s-processing"]
    html = failed.content.decode()
    assert "processing" in html and "s-active" not in html.split('id="items"')[1]


def test_operations_are_read_only(admin_client, superuser, trio):
    op = execute(superuser, "close", ["s-active"])
    assert admin_client.get(reverse("admin:bulkops_bulkoperation_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:bulkops_bulkoperation_delete", args=[op.pk])).status_code
        == 403
    )
    listing = admin_client.get(reverse("admin:bulkops_bulkoperation_changelist"))
    assert progress(op) in listing.content.decode()
