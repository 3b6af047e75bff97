"""The admin's lists and pages as a person sees them at 1366×900 in Debian's Chromium:
the operations list fits (no horizontal scrolling, every column on screen), with status
badges and bars in the progress page's colours; the sessions list keeps ids on one line
and marks deletion only where it is true; a superuser watching another user's operation
is told the page polls (the WebSocket carries only a user's own operations)."""

from __future__ import annotations

import base64
import os
import re

import pytest

from bulkops.tests.admin.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    live_server,
    log_in,
    manage,
)
from bulkops.tests.support.helpers import require

pytestmark = [pytest.mark.browser, pytest.mark.processes]

WIDE = {"width": 1366, "height": 900}
#: Operations of every kind, status and source, by ada and by a superuser: the widest
#: list a superuser sees.
OPERATIONS_SETUP = f"""
import datetime
from django.contrib.auth.models import User
from django.utils import timezone
from bulkops.models import BulkOperation, Session

ada = User.objects.get(username="ada")
root = User.objects.create_superuser("root", password={PASSWORD!r}, email="")
Session.objects.filter(pk="note-3").update(deleted_at=timezone.now())
now = timezone.now()
kinds = [
    ("export", {{"format": "json", "include_details": True}}, "cli", "completed"),
    ("delete", {{"soft_delete": False, "cascade_exports": True}}, "api", "partial"),
    ("delete", {{"soft_delete": True}}, "admin", "failed"),
    ("archive", {{"atomic": True}}, "admin", "running"),
    ("close", {{}}, "cli", "paused"),
    ("restore", {{}}, "api", "cancelled"),
    ("close", {{}}, "admin", "pending"),
]
for n, (action, params, source, status) in enumerate(kinds):
    finished = status in ("completed", "partial", "failed", "cancelled")
    BulkOperation.objects.create(
        user=root if n % 2 else ada, action=action, params=params, source=source,
        status=status, total=10000, processed=10000 if finished else 4321,
        succeeded=9000, skipped=640, failed=360 if status != "completed" else 0,
        created_at=now - datetime.timedelta(minutes=n), started_at=now - datetime.timedelta(minutes=n),
        finished_at=now if finished else None,
        excluded={{"ineligible": [{{"reason": "processing", "count": 123, "sample": []}}]}},
    )
"""


@pytest.fixture(scope="module")
def layout_server(tmp_path_factory):
    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    with live_server(tmp_path_factory.mktemp("admin-layout")) as (base, env):
        manage("shell", "-c", OPERATIONS_SETUP, env=env)
        yield base, env


@pytest.fixture
def wide_page(layout_server):
    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport=WIDE, color_scheme="light")
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def horizontal_overflow(page) -> dict[str, int]:
    """How far the page and the changelist's results scroll sideways (0: they fit)."""
    return page.evaluate(
        """() => {
            const results = document.querySelector('#changelist .results');
            const root = document.documentElement;
            return {
                page: root.scrollWidth - root.clientWidth,
                results: results.scrollWidth - results.clientWidth,
            };
        }"""
    )


def right_edges(page, selector: str) -> list[float]:
    return page.eval_on_selector_all(
        selector, "cells => cells.map(c => c.getBoundingClientRect().right)"
    )


#: The colour of a screenshot's pixel a quarter of the way along its middle line, read
#: back through a canvas (a ``<progress>``'s filled part is a pseudo-element:
#: getComputedStyle does not see it).
QUARTER_PIXEL = """async (png) => {
    const image = new Image();
    image.src = "data:image/png;base64," + png;
    await image.decode();
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [image.width, image.height];
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const [r, g, b] = context.getImageData(image.width >> 2, image.height >> 1, 1, 1).data;
    return `rgb(${r}, ${g}, ${b})`;
}"""


def bar_colour(page, status: str) -> str:
    """The colour of the filled part of the first list bar of an operation in ``status``
    (the completed and failed ones are full, the running one 43 %: a quarter is filled)."""
    bar = page.locator(f"#result_list progress.bulkops-status-{status}").first
    png = base64.b64encode(bar.screenshot(animations="disabled")).decode()
    return page.evaluate(QUARTER_PIXEL, png)


def test_the_operations_list_fits_1366_pixels(layout_server, wide_page):
    from playwright.sync_api import expect

    base, _ = layout_server
    page = wide_page
    log_in(page, base, "root")
    page.goto(f"{base}/admin/bulkops/bulkoperation/")
    expect(page.locator("#result_list tbody tr")).to_have_count(7)
    for header in ("Operation", "User", "Source", "Status", "Created, duration"):
        expect(page.locator("#result_list thead")).to_contain_text(header, ignore_case=True)
    page.screenshot(path=str(ARTIFACTS / "admin-operations-1366.png"))
    assert horizontal_overflow(page) == {"page": 0, "results": 0}
    viewport = page.viewport_size["width"]
    assert max(right_edges(page, "#result_list th, #result_list td")) <= viewport
    # Status badges and bars in the progress page's colours.
    colours = page.eval_on_selector_all(
        "#result_list td.field-status_and_progress .bulkops-badge",
        "badges => badges.map(b => [b.className, getComputedStyle(b).backgroundColor])",
    )
    by_status = {re.search(r"status-(\w+)", cls).group(1): colour for cls, colour in colours}
    assert by_status["completed"] == "rgb(46, 133, 64)"
    assert by_status["failed"] != by_status["completed"] != by_status["running"]
    bars = {status: bar_colour(page, status) for status in ("completed", "failed", "running")}
    assert bars == {status: by_status[status] for status in bars}, (bars, by_status)
    expect(page.locator("#result_list")).to_contain_text("123 left out as previewed")
    # The superuser's own running operations only.
    page.click("text=My running operations")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)  # root's archive, running (ada's paused close is not his)
    expect(rows).to_contain_text("Archive")
    page.emulate_media(color_scheme="dark")
    page.goto(f"{base}/admin/bulkops/bulkoperation/")
    assert horizontal_overflow(page) == {"page": 0, "results": 0}
    page.screenshot(path=str(ARTIFACTS / "admin-operations-1366-dark.png"))


def test_the_sessions_list_reads_at_1366_pixels(layout_server, wide_page):
    from playwright.sync_api import expect

    base, _ = layout_server
    page = wide_page
    log_in(page, base, "root")
    page.goto(f"{base}/admin/bulkops/session/?deleted=all&q=note")
    expect(page.locator("#result_list tbody tr")).to_have_count(4)
    assert horizontal_overflow(page) == {"page": 0, "results": 0}
    # Each id on one line: an inline link broken over lines has several client rects.
    lines = page.eval_on_selector_all(
        "#result_list .field-id a", "links => links.map(a => a.getClientRects().length)"
    )
    assert lines == [1, 1, 1, 1], lines
    deleted = page.locator("#result_list tbody tr", has=page.locator(".bulkops-deleted"))
    expect(deleted).to_have_count(1)
    expect(deleted).to_contain_text("note-3")
    expect(page.locator("#result_list img[src*='icon-no']")).to_have_count(0)
    page.goto(f"{base}/admin/bulkops/session/")
    assert horizontal_overflow(page) == {"page": 0, "results": 0}
    page.screenshot(path=str(ARTIFACTS / "admin-sessions-1366.png"))


def test_a_superuser_on_another_users_progress_page_is_told_it_polls(layout_server, wide_page):
    """The socket answers ``not_found`` to a superuser's subscribe to ada's operation (it
    carries a user's own operations): the page must not claim to be live over it."""
    from playwright.sync_api import expect

    base, env = layout_server
    out = manage("bulk", "close", "--user", "ada", "--ids", "q-001", env=env).stdout
    op_id = re.search(r"op-[0-9a-f]{32}", out).group(0)  # pending: no worker runs here
    page = wide_page
    frames: list[str] = []
    sockets = []
    page.on(
        "websocket",
        lambda ws: (sockets.append(ws), ws.on("framereceived", lambda f: frames.append(f))),
    )
    log_in(page, base, "root")
    page.goto(f"{base}/admin/bulkops/bulkoperation/{op_id}/progress/")
    for _ in range(300):  # the subscribe's answer: at most 30 s
        if any('"not_found"' in str(frame) for frame in frames):
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail(f"no not_found answer to the subscribe: {frames}")
    expect(page.locator("[data-live]")).to_have_text("live (polling)", timeout=15_000)
    assert not any('"subscribed"' in str(frame) for frame in frames), frames
    for _ in range(300):  # the page gives the useless socket up
        if sockets and sockets[-1].is_closed():
            break
        page.wait_for_timeout(100)
    assert sockets[-1].is_closed()
    expect(page.locator("[data-live]")).to_have_text("live (polling)")
