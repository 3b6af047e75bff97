"""The Content-Security-Policy, verified where it is enforced: Debian's Chromium (driven by
Playwright) visits the admin, Swagger UI and the browsable API on ``manage.py serve`` and
the browser reports no violation — from its console ("Refused to …", "… Content Security
Policy …") or from ``securitypolicyviolation`` events — while every page still does its
job: the progress page's script runs and its WebSocket opens, Swagger UI renders the
operations, the browsable API logs in, filters and logs out.

The first tests check the header itself, in process.
"""

from __future__ import annotations

import os
import re

import pytest
from django.test import RequestFactory

from bulkops.tests.admin.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    finish_worker,
    live_server,
    log_in,
    run_action,
    shot,
    start_worker,
)
from bulkops.tests.support.helpers import require

#: Reports each violation to Python (survives navigations, unlike a page variable).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.reportCspViolation(
    `${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`
  );
});
"""
CONSOLE_MARKERS = ("Content Security Policy", "Refused to")


def policy_of(response) -> dict[str, list[str]]:
    header = response.headers.get("content-security-policy") or response.headers.get(
        "Content-Security-Policy"
    )
    assert header, "no Content-Security-Policy header"
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


# --- The header ----------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_pages_carry_the_policy(client, make_user):
    client.force_login(make_user("csp-staff", superuser=True))
    policy = policy_of(client.get("/admin/bulkops/session/"))
    assert policy == {
        "default-src": ["'self'"],
        "connect-src": ["'self'", "ws://testserver"],
        "img-src": ["'self'", "data:"],
        "style-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    }


def test_the_websocket_source_follows_the_requests_scheme_and_host(settings):
    from django.http import HttpResponse

    from bulkops.csp import CSPMiddleware

    settings.ALLOWED_HOSTS = ["ops.example.test"]
    middleware = CSPMiddleware(lambda request: HttpResponse())
    secure = RequestFactory().get("/", secure=True, HTTP_HOST="ops.example.test:8443")
    assert policy_of(middleware(secure))["connect-src"] == ["'self'", "wss://ops.example.test:8443"]
    # A host ALLOWED_HOSTS refuses is never written into the policy.
    foreign = RequestFactory().get("/", HTTP_HOST="evil.test")
    assert policy_of(middleware(foreign))["connect-src"] == ["'self'"]


# --- In Chromium ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def staff_docs_server(tmp_path_factory):
    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    with live_server(tmp_path_factory.mktemp("csp-browser"), BULKOPS_API_DOCS="staff") as running:
        yield running


@pytest.fixture
def watched_page(staff_docs_server):
    """A Chromium page whose CSP violations, console reports, uncaught errors and document
    responses are recorded; yields (page, record)."""
    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    record = {"violations": [], "console": [], "errors": [], "documents": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.expose_function("reportCspViolation", lambda text: record["violations"].append(text))
        page.add_init_script(REPORT_VIOLATIONS)
        page.on(
            "console",
            lambda m: (
                any(k in m.text for k in CONSOLE_MARKERS) and record["console"].append(m.text)
            ),
        )
        page.on("pageerror", lambda error: record["errors"].append(str(error)))
        page.on(
            "response",
            lambda r: r.request.resource_type == "document" and record["documents"].append(r),
        )
        try:
            yield page, record
        finally:
            context.close()
            browser.close()


def close_three_active_sessions(page, base: str) -> None:
    """Changelist → confirmation page → confirmed: lands on the progress page."""
    from playwright.sync_api import expect

    page.goto(f"{base}/admin/bulkops/session/?q=Quarterly&status__exact=active")
    boxes = page.locator("#result_list tbody input.action-select")
    for i in range(3):
        boxes.nth(i).check()
    run_action(page, "close_sessions")
    expect(page.locator('[data-count="eligible"]')).to_have_text("3")
    page.click("input[name=post]")
    expect(page).to_have_url(re.compile(r"/admin/bulkops/bulkoperation/op-[0-9a-f]+/progress/$"))


def watch_progress_over_the_websocket(page, env) -> None:
    """progress.js runs (it says so in [data-live]), its WebSocket opens, and the page
    reaches the final state while a real worker runs the operation."""
    from playwright.sync_api import expect

    expect(page.locator("[data-live]")).to_have_text("live (WebSocket)")
    worker = start_worker(env)
    expect(page.locator('[data-field="progress"]')).to_have_text("100", timeout=30_000)
    finish_worker(worker)
    expect(page.locator('[data-field="status"]')).to_have_text(
        re.compile("completed", re.I), timeout=15_000
    )
    page.click("text=Undo…")  # a follow-up confirmation page (undo, retry share it)
    expect(page.locator('[data-count="eligible"]')).to_have_text("3")
    page.go_back()
    page.click("text=Operation details and items")
    expect(page.locator("#items")).to_contain_text("3 items")
    page.goto(page.url.split("/admin/")[0] + "/admin/bulkops/session/q-001/change/")
    expect(page.locator("#operations")).to_contain_text("Bulk operations on this session: 1")


def read_swagger_ui(page, base: str) -> None:
    """Swagger UI (staff only here) renders the operations and opens one."""
    from playwright.sync_api import expect

    page.goto(f"{base}/api/docs/")
    summaries = page.locator(".opblock-summary-path")
    expect(summaries.first).to_be_visible()
    expect(
        page.locator('.opblock-summary-path[data-path="/api/bulk/sessions/delete"]')
    ).to_be_visible()
    page.locator('.opblock-summary-path[data-path="/api/bulk/sessions/validate"]').click()
    expect(page.locator(".opblock.is-open .try-out__btn")).to_be_visible()
    shot(page, "api-docs-csp.png")


@pytest.mark.browser
@pytest.mark.processes
@pytest.mark.timeout(120)
def test_admin_progress_and_swagger_ui_work_with_no_csp_violation(staff_docs_server, watched_page):
    base, env = staff_docs_server
    page, record = watched_page
    log_in(page, base)
    for other_admin_page in ("/admin/", "/admin/bulkops/session/q-000/change/",
                             "/admin/bulkops/bulkoperation/"):  # fmt: skip
        page.goto(base + other_admin_page)
    close_three_active_sessions(page, base)
    watch_progress_over_the_websocket(page, env)
    read_swagger_ui(page, base)

    assert record["violations"] == [], "\n".join(record["violations"])
    assert record["console"] == [], "\n".join(record["console"])
    assert record["errors"] == [], "\n".join(record["errors"])
    visited = {r.url.removeprefix(base).split("?")[0] for r in record["documents"]}
    assert {"/admin/login/", "/admin/bulkops/session/", "/api/docs/"} <= visited, visited
    host = base.removeprefix("http://")
    for response in record["documents"]:
        policy = policy_of(response)
        assert policy["default-src"] == ["'self'"], response.url
        assert policy["connect-src"] == ["'self'", f"ws://{host}"], response.url


def browse_the_api(page, base: str) -> None:
    """The browsable API as the banner of ``serve`` leads to it: its login, the info page,
    a list and its Filters dialog, an action's page (GET: 405, with its request form),
    then Log out (a POST form, no inline script)."""
    from playwright.sync_api import expect

    page.goto(f"{base}/api-auth/login/?next=/api/bulk/sessions/info")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("#submit-id-submit")
    expect(page).to_have_url(f"{base}/api/bulk/sessions/info")
    expect(page.locator(".response-info")).to_contain_text('"rate_limits"')
    page.goto(f"{base}/api/sessions/?search=Quarterly")
    page.click("button[data-target='#filtersModal']")
    expect(page.locator("#filtersModal input[name=search]")).to_be_visible()
    page.keyboard.press("Escape")
    page.goto(f"{base}/api/bulk/sessions/close")
    expect(page.locator("#post-generic-content-form")).to_be_visible()
    page.click("a.dropdown-toggle")
    page.click("button.api-logout")
    expect(page.locator(".navbar a", has_text="Log in")).to_be_visible()
    shot(page, "browsable-api-csp.png")


@pytest.mark.browser
@pytest.mark.processes
@pytest.mark.timeout(120)
def test_the_browsable_api_and_its_login_work_with_no_csp_violation(
    staff_docs_server, watched_page
):
    base, _ = staff_docs_server
    page, record = watched_page
    browse_the_api(page, base)

    assert record["violations"] == [], "\n".join(record["violations"])
    assert record["console"] == [], "\n".join(record["console"])
    assert record["errors"] == [], "\n".join(record["errors"])
    visited = {r.url.removeprefix(base).split("?")[0] for r in record["documents"]}
    assert {"/api-auth/login/", "/api/bulk/sessions/info", "/api/sessions/"} <= visited
    for response in record["documents"]:
        assert policy_of(response)["style-src"] == ["'self'"], response.url
