""" "Select all N matching" past the per-operation cap, in a real browser (Chromium driven
by Playwright against ``manage.py serve`` on a PostgreSQL database of its own): the
changelist's filter becomes one large operation; the confirmation page shows the exact
counts by reason with samples, and the progress page its slices, going to the final
state live once a worker runs."""

from __future__ import annotations

import re

import pytest

from bulkops.tests.admin.test_browser import (  # noqa: F401  (browser: a fixture)
    QUARTERLY,
    browser,
    finish_worker,
    live_server,
    log_in,
    manage,
    run_action,
    shot,
    start_worker,
)
from bulkops.tests.support.processes import ProcessDB, using_postgres

pytestmark = [
    pytest.mark.browser,
    pytest.mark.processes,
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
]

CAP = 100  # below QUARTERLY (133): "select all" of them is past the cap
GRANT = """
from django.contrib.auth.models import Permission, User
User.objects.get(username="ada").user_permissions.add(
    Permission.objects.get(content_type__app_label="bulkops", codename="run_large_operation")
)
"""


@pytest.fixture(scope="module")
def large_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-browser-large")
    db = ProcessDB(tmp, postgres=True, prefix="browser_large")
    try:
        with live_server(tmp, database_url=db.url, BULKOPS_MAX_SESSIONS_PER_OPERATION=str(CAP)) as (
            base,
            env,
        ):
            manage("shell", "-c", GRANT, env=env)
            yield base, env
    finally:
        db.drop()


def test_select_all_matching_past_the_cap_runs_one_large_operation(large_server, browser):  # noqa: F811
    from playwright.sync_api import expect

    base, env = large_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, base)
        page.goto(f"{base}/admin/bulkops/session/?q=Quarterly")
        page.click("#action-toggle")
        page.click(".actions .question a")
        expect(page.locator(".actions .all")).to_contain_text(str(QUARTERLY))
        run_action(page, "close_sessions")

        expect(page.locator('[data-count="matching"]')).to_have_text(str(QUARTERLY))
        expect(page.locator("[data-large]")).to_contain_text("past the per-operation cap")
        expect(page.locator(".bulkops-lead code")).to_have_text("deleted=False, search=Quarterly")
        expect(page.locator('[data-count="eligible"]')).to_have_text(str(QUARTERLY - 3))
        expect(page.locator('[data-count="ineligible"]')).to_have_text("3")
        ineligible = page.locator("#ineligible")
        expect(ineligible).to_contain_text("q-processing")
        expect(ineligible).to_contain_text("Samples: at most 20 sessions per reason")
        expect(page.locator("#eligible tbody tr")).to_have_count(20)
        expect(page.locator("input[name=run_on]")).to_have_count(0)
        token = page.locator("input[name=_bulk_selection_token]")
        assert token.get_attribute("value")
        shot(page, "admin-large-confirmation.png")
        page.click("input[name=post]")

        expect(page).to_have_url(re.compile(r"/bulkoperation/op-[0-9a-f]+/progress/$"))
        expect(page.locator(".bulkops-lead")).to_contain_text(f"of {QUARTERLY} sessions")
        expect(page.locator('[data-field="slices"]')).to_have_text(re.compile(r"^0 of \d+$"))
        expect(page.locator('[data-field="eta"]')).to_be_visible()
        page.evaluate("window.__sameDocument = true")
        worker = start_worker(env)
        expect(page.locator('[data-field="status"]')).to_have_text(
            re.compile("partial", re.I), timeout=60_000
        )
        finish_worker(worker)
        expect(page.locator('[data-field="succeeded"]')).to_have_text(str(QUARTERLY - 3))
        expect(page.locator('[data-field="failed"]')).to_have_text("3")
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        shot(page, "admin-large-progress.png")
    finally:
        context.close()
