"""The admin end to end in a real browser: Debian's Chromium driven by Playwright against
``manage.py serve`` on a temporary SQLite database.

The server runs without its in-process worker; the test starts ``db_worker`` once the
progress page is on screen, so the page is seen going from pending to 100 % live (the
WebSocket, or the polling fallback) — never by a reload.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bulkops.admin.sessions import SessionAdmin
from bulkops.tests.support.helpers import REDIS_URL, free_port, port_open, redis_available, require

pytestmark = [pytest.mark.browser, pytest.mark.processes]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "browser-test-pw-1"
QUARTERLY = 133  # more than a changelist page (50), so "Select all 133" is offered

SETUP = f"""
import datetime
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from bulkops.models import Session

ada = User.objects.create_user("ada", password={PASSWORD!r}, is_staff=True)
ada.user_permissions.set(Permission.objects.filter(
    content_type__app_label="bulkops",
    codename__in=["view_session", "change_session", "delete_session"],
))
now = timezone.now()
rows = [Session(id="q-processing", owner=ada, title="Quarterly report (pipeline running)",
                status="processing", content="x" * 4000, created_at=now)]
rows += [Session(id=f"q-archived-{{i}}", owner=ada, title=f"Quarterly report, archived {{i}}",
                 status="archived", created_at=now - datetime.timedelta(minutes=1 + i))
         for i in range(2)]
rows += [Session(id=f"q-{{i:03d}}", owner=ada, title=f"Quarterly report {{i:03d}}",
                 content="Revenue, costs and notes. " * 80,
                 created_at=now - datetime.timedelta(minutes=10 + i))
         for i in range({QUARTERLY} - 3)]
rows += [Session(id=f"note-{{i}}", owner=ada, title=f"Meeting note {{i}}",
                 created_at=now - datetime.timedelta(hours=5, minutes=i))
         for i in range(4)]
Session.objects.bulk_create(rows)
"""


def manage(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@contextlib.contextmanager
def live_server(tmp: Path, *, database_url: str | None = None, **extra_env: str):
    """``manage.py serve --no-worker`` on a fresh SQLite file in ``tmp`` (or the empty
    database at ``database_url``), with the test data; yields (base URL, env) — the env
    a worker process needs to share it."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    env.update(
        DATABASE_URL=database_url or f"sqlite:///{tmp / 'db.sqlite3'}",
        BULKOPS_EXPORT_DIR=str(tmp / "exports"),
        BULKOPS_CHUNK_SIZE="10",
        # Queued, so the pages show an operation waiting, then running (small ones
        # would otherwise finish in the request: api/test_inline.py).
        BULKOPS_INLINE_MAX_SESSIONS="0",
        DEBUG="1",
        PYTHONUNBUFFERED="1",
        **extra_env,
    )
    manage("migrate", "--no-input", env=env)
    manage("shell", "-c", SETUP, env=env)
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"admin-browser-server-{tmp.name}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-demo", "--no-worker", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if port_open("127.0.0.1", port):
                break
            if proc.poll() is not None:
                pytest.fail(f"serve exited early; see {log.name}")
            time.sleep(0.1)
        else:
            pytest.fail("serve did not start listening within 30 s")
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    with live_server(tmp_path_factory.mktemp("admin-browser")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    """A real worker process that runs every queued operation, then exits."""
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--batch",
            "--no-startup-delay",
            "--no-reload",
            "--interval",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_worker(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out


def log_in(page, base: str, username: str = "ada") -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/admin/login/?next=/admin/bulkops/session/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/bulkops/session/$"))


def run_action(page, action: str) -> None:
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def confirm_archive_of_eight(page) -> None:
    """Filter the changelist, tick eight rows (the processing session, the two archived
    ones and five active ones), and check the confirmation page; nothing changes yet."""
    from playwright.sync_api import expect

    page.fill("#searchbar", "Quarterly")
    page.press("#searchbar", "Enter")
    expect(page.locator("#result_list tbody tr")).to_have_count(SessionAdmin.list_per_page)
    expect(page.locator(".paginator")).to_contain_text(f"{QUARTERLY} sessions")
    boxes = page.locator("#result_list tbody input.action-select")
    for i in range(8):
        boxes.nth(i).check()
    run_action(page, "archive_sessions")
    expect(page.locator("#content h1")).to_contain_text("Archive")
    expect(page.locator('[data-count="eligible"]')).to_have_text("5")
    expect(page.locator('[data-count="skipped"]')).to_have_text("2")
    expect(page.locator('[data-count="ineligible"]')).to_have_text("1")
    ineligible = page.locator("#ineligible")
    expect(ineligible).to_contain_text("q-processing")
    expect(ineligible).to_contain_text("A pipeline is working on this session")
    expect(page.locator("#skipped")).to_contain_text("The session is already archived.")
    # The default: run on the eligible sessions only.
    expect(page.locator("input[name=run_on][value=eligible]")).to_be_checked()
    page.fill("textarea[name=reason]", "Quarter closed: archive its reports")
    shot(page, "admin-confirmation.png")
    page.emulate_media(color_scheme="dark")
    shot(page, "admin-confirmation-dark.png")
    page.emulate_media(color_scheme="light")


GREEN = "rgb(46, 133, 64)"  # #2e8540, the completed colour
HAIRLINE = "rgb(232, 232, 232)"  # the admin's --hairline-color: a quiet card's edge


def watch_archive_run_live(page, env) -> None:
    """The progress page goes from pending to its final state without a reload; run on
    the eligible sessions only, it ends green (completed), and what the confirmation
    page showed as skipped or not eligible is listed apart, not as failures."""
    from playwright.sync_api import expect

    expect(page).to_have_url(re.compile(r"/admin/bulkops/bulkoperation/op-[0-9a-f]+/progress/$"))
    expect(page.locator('[data-field="status"]')).to_have_text(re.compile("pending", re.I))
    expect(page.locator('[data-field="progress"]')).to_have_text("0")
    page.evaluate("window.__sameDocument = true")
    worker = start_worker(env)
    expect(page.locator('[data-field="progress"]')).to_have_text("100", timeout=60_000)
    finish_worker(worker)
    expect(page.locator(".bulkops-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator('[data-field="status"]')).to_have_text(
        re.compile("completed", re.I), timeout=30_000
    )
    left_out = page.locator("#left-out")
    expect(left_out).to_contain_text("Left out as previewed: 3 sessions", timeout=30_000)
    expect(left_out).to_contain_text("q-processing")
    expect(left_out).to_contain_text("A pipeline is working on this session")
    expect(page.locator("#failed-items")).to_have_count(0)
    expect(page.locator('[data-field="succeeded"]')).to_have_text("5")
    expect(page.locator('[data-field="skipped"]')).to_have_text("0")
    expect(page.locator('[data-field="failed"]')).to_have_text("0")
    for element in (".bulkops-bar-fill", '[data-field="status"]'):
        colour = page.eval_on_selector(element, "e => getComputedStyle(e).backgroundColor")
        assert colour == GREEN, (element, colour)
    # A count of zero has no accent: no red edge on "0 failed" (5 succeeded keep green).
    accents = page.eval_on_selector_all(
        ".bulkops-stats > div[class*=bulkops-stat-]",
        "cards => cards.map(c => getComputedStyle(c).borderLeftColor)",
    )
    assert accents == [GREEN, HAIRLINE, HAIRLINE, HAIRLINE], accents
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    shot(page, "admin-progress.png")
    page.emulate_media(color_scheme="dark")
    shot(page, "admin-progress-dark.png")
    page.emulate_media(color_scheme="light")


def export_all_matching_and_download(page, base, env) -> list[list[str]]:
    """ "Select all" matching sessions, export them as CSV, download the file's rows."""
    from playwright.sync_api import expect

    page.goto(f"{base}/admin/bulkops/session/?q=Quarterly")
    page.click("#action-toggle")
    page.click(".actions .question a")
    expect(page.locator(".actions .all")).to_be_visible()
    run_action(page, "export_sessions_csv")
    expect(page.locator(".bulkops-lead")).to_contain_text(f"All {QUARTERLY} sessions")
    expect(page.locator('[data-count="eligible"]')).to_have_text(str(QUARTERLY))
    page.check("input[name=format][value=csv]")
    page.click("input[name=post]")
    expect(page.locator('[data-field="status"]')).to_have_text(re.compile("pending", re.I))
    worker = start_worker(env)
    download_link = page.locator(".bulkops-download a")
    expect(download_link).to_be_visible(timeout=60_000)
    finish_worker(worker)
    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert re.fullmatch(r"session_export_\d{8}_op-[0-9a-f]+\.csv", download.suggested_filename)
    return list(csv.reader(io.StringIO(Path(download.path()).read_bytes().decode("utf-8"))))


def test_archive_with_confirmation_and_live_progress_then_export_and_download(server, browser):
    base, env = server
    context = browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}, color_scheme="light"
    )
    page = context.new_page()
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    try:
        log_in(page, base)
        confirm_archive_of_eight(page)
        page.click("input[name=post]")
        watch_archive_run_live(page, env)
        rows = export_all_matching_and_download(page, base, env)
        assert rows[0] == ["id", "title", "status", "owner", "created_at", "updated_at", "metadata"]
        assert len(rows) == 1 + QUARTERLY
        by_id = {row[0]: row for row in rows[1:]}
        assert by_id["q-processing"][2] == "processing"  # export reads processing sessions
        assert by_id["q-000"][1:4] == ["Quarterly report 000", "archived", "ada"]
        assert not any(sid.startswith("note-") for sid in by_id)
    finally:
        # Which live path the page had: WebSocket frames, if the consumer answered.
        (ARTIFACTS / "admin-browser-websocket.log").write_text(
            "\n".join(str(f) for f in frames) or "no WebSocket frames (polling only)\n"
        )
        context.close()


def test_without_javascript_the_progress_page_refreshes_to_the_final_state(server, browser):
    from playwright.sync_api import expect

    base, env = server
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        log_in(page, base)
        page.goto(f"{base}/admin/bulkops/session/?q=Meeting+note")
        boxes = page.locator("#result_list tbody input.action-select")
        expect(boxes).to_have_count(4)
        for i in range(4):
            boxes.nth(i).check()
        run_action(page, "close_sessions")
        expect(page.locator('[data-count="eligible"]')).to_have_text("4")
        page.click("input[name=post]")
        expect(page.locator('[data-field="status"]')).to_have_text(re.compile("pending", re.I))
        finish_worker(start_worker(env))
        # The <noscript> refresh brings the final state.
        expect(page.locator('[data-field="status"]')).to_have_text(
            re.compile("completed", re.I), timeout=30_000
        )
        expect(page.locator('[data-field="succeeded"]')).to_have_text("4")
    finally:
        context.close()


def test_a_pause_from_elsewhere_shows_resume_live_and_resume_runs_it_to_the_end(server, browser):
    from playwright.sync_api import expect

    base, env = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, base)
        page.goto(f"{base}/admin/bulkops/session/?q=q-12")
        expect(page.locator("#result_list tbody input.action-select")).to_have_count(10)
        page.click("#action-toggle")
        run_action(page, "close_sessions")
        expect(page.locator('[data-count="eligible"]')).to_have_text("10")
        page.click("input[name=post]")
        expect(page.locator("input[value='Pause operation']")).to_be_visible()
        op_id = re.search(r"/(op-[0-9a-f]+)/progress/", page.url).group(1)
        page.evaluate("window.__sameDocument = true")
        manage("bulk", "pause", op_id, env=env)  # paused elsewhere: the page follows
        expect(page.locator("input[value='Resume operation']")).to_be_visible(timeout=30_000)
        expect(page.locator("input[value='Pause operation']")).to_have_count(0)
        expect(page.locator('[data-field="status"]')).to_have_text(re.compile("paused", re.I))
        expect(page.locator('[data-field="eta"]')).to_have_text("paused")
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        shot(page, "admin-progress-paused.png")
        page.click("input[value='Resume operation']")
        expect(page.locator(".messagelist")).to_contain_text("Resumed")
        finish_worker(start_worker(env))
        expect(page.locator('[data-field="status"]')).to_have_text(
            re.compile("completed", re.I), timeout=30_000
        )
        expect(page.locator('[data-field="succeeded"]')).to_have_text("10")
    finally:
        context.close()


def test_progress_moves_over_the_websocket_alone(browser, tmp_path):
    """Server and worker share Redis, so the worker's events reach the page's socket; the
    polling endpoint is blocked, so only the WebSocket can bring the bar to 100 %."""
    from playwright.sync_api import expect

    require(os.path.exists(CHROMIUM), "Chromium (/usr/bin/chromium)")
    require(redis_available(), "Redis")
    redis_env = {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": f"admin-browser-{uuid.uuid4().hex}"}
    with live_server(tmp_path, **redis_env) as (base, env):
        context = browser.new_context()
        page = context.new_page()
        frames: list[dict] = []
        page.on(
            "websocket",
            lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))),
        )
        page.route(
            re.compile(r"/admin/bulkops/bulkoperation/op-[0-9a-f]+/status/$"), lambda r: r.abort()
        )
        try:
            log_in(page, base)
            page.goto(f"{base}/admin/bulkops/session/?q=Quarterly&status__exact=active")
            boxes = page.locator("#result_list tbody input.action-select")
            for i in range(3):
                boxes.nth(i).check()
            run_action(page, "close_sessions")
            page.click("input[name=post]")
            expect(page.locator('[data-field="status"]')).to_have_text(re.compile("pending", re.I))
            expect(page.locator("[data-live]")).to_have_text("live (WebSocket)")
            worker = start_worker(env)
            expect(page.locator('[data-field="progress"]')).to_have_text("100", timeout=60_000)
            finish_worker(worker)
            expect(page.locator('[data-field="status"]')).to_have_text(
                re.compile("completed", re.I), timeout=30_000
            )
            op_id = page.url.rstrip("/").split("/")[-2]
            types = [f.get("type") for f in frames if f.get("operation_id") == op_id]
            assert "bulk_operation_completed" in types, types
        finally:
            context.close()


DRIFT_SETUP = """
from django.contrib.auth.models import User
from bulkops.models import Session
ada = User.objects.get(username="ada")
Session.objects.bulk_create(
    Session(id=f"drift-{i}", owner=ada, title=f"Drift check {i}") for i in range(3)
)
"""


def database_rows(env: dict[str, str], sql: str) -> list[tuple]:
    """Read the live server's SQLite database directly."""
    import sqlite3

    conn = sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"), timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_selection_that_drifts_after_the_confirmation_page_runs_nothing(server, browser):
    """A session becomes ``processing`` while the staff member reads the page: Confirm
    starts nothing and the page comes back with the counts then and now; confirming that
    page starts the operation it now shows (on its two eligible sessions)."""
    from playwright.sync_api import expect

    base, env = server
    manage("shell", "-c", DRIFT_SETUP, env=env)
    items = "SELECT COUNT(*) FROM bulkops_bulkoperationitem WHERE session_id LIKE 'drift-%'"
    context = browser.new_context()
    page = context.new_page()
    try:
        log_in(page, base)
        page.goto(f"{base}/admin/bulkops/session/?q=Drift+check")
        expect(page.locator("#result_list tbody tr")).to_have_count(3)
        page.click("#action-toggle")
        run_action(page, "close_sessions")
        expect(page.locator('[data-count="will-apply"]')).to_have_text("3")
        expect(page.locator(".bulkops-summary")).to_contain_text("Drift check 0")
        manage(
            "shell",
            "-c",
            "from bulkops.models import Session; "
            "Session.objects.filter(pk='drift-1').update(status='processing')",
            env=env,
        )
        page.click("input[name=post]")
        notice = page.locator(".bulkops-drift")
        expect(notice).to_contain_text("Nothing was done")
        expect(notice).to_contain_text(
            "3 eligible of 3 sessions then, 2 eligible of 3 sessions now"
        )
        expect(page.locator('[data-count="eligible"]')).to_have_text("2")
        expect(page.locator('[data-count="ineligible"]')).to_have_text("1")
        assert database_rows(env, items) == [(0,)]
        shot(page, "admin-confirmation-drift.png")

        page.click("input[name=post]")
        expect(page).to_have_url(
            re.compile(r"/admin/bulkops/bulkoperation/op-[0-9a-f]+/progress/$")
        )
        assert database_rows(env, items) == [(2,)]  # the eligible two; drift-1 left out
        statuses = database_rows(env, "SELECT status FROM bulkops_session WHERE id LIKE 'drift-%'")
        assert sorted(statuses) == [("active",), ("active",), ("processing",)]  # not run yet
    finally:
        context.close()


def shell_json(env: dict[str, str], code: str):
    """Run ``code`` (which prints one JSON value) in ``manage.py shell`` on the server's
    database; return the value."""
    return json.loads(manage("shell", "-c", code, env=env).stdout.strip().splitlines()[-1])


NOTES_STATE = """
import json
from bulkops.models import BulkOperation, Session
rows = Session.objects.filter(pk__startswith="note-").order_by("pk")
undo = BulkOperation.objects.filter(action="undo").values("status", "succeeded", "failed")
print(json.dumps({"deleted": {s.pk: s.deleted_at is not None for s in rows},
                  "undo": list(undo)}))
"""


def test_undo_a_soft_delete_through_the_admin(server, browser):
    """A soft delete of three notes (one restored by hand since), undone from its progress
    page: the confirmation shows 2 eligible and 1 ``changed_since``; confirming starts the
    undo of the two (the third left out as previewed), whose progress page runs it; the
    database has the two notes back."""
    from playwright.sync_api import expect

    base, env = server
    out = manage(
        "bulk", "delete", "--user", "ada", "--ids", "note-0", "note-1", "note-2", env=env
    ).stdout
    op_id = re.search(r"op-[0-9a-f]{32}", out).group(0)
    finish_worker(start_worker(env))
    manage("shell", "-c", SET_NOTE_2_RESTORED, env=env)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, base)
        page.goto(f"{base}/admin/bulkops/bulkoperation/{op_id}/progress/")
        expect(page.locator('[data-field="status"]')).to_have_text(re.compile("completed", re.I))
        expect(page.locator(".bulkops-report a").first).to_have_attribute(
            "href", f"/admin/bulkops/bulkoperation/{op_id}/report/?format=csv"
        )
        page.click("a.bulkops-undo")
        expect(page.locator('[data-count="eligible"]')).to_have_text("2")
        expect(page.locator('[data-count="ineligible"]')).to_have_text("1")
        expect(page.locator("#ineligible")).to_contain_text("note-2")
        expect(page.locator("#ineligible")).to_contain_text("changed_since")
        shot(page, "admin-undo-confirmation.png")
        assert shell_json(env, NOTES_STATE)["undo"] == []  # nothing happened yet
        page.click("input[name=post]")
        expect(page).to_have_url(re.compile(r"/bulkoperation/op-[0-9a-f]+/progress/$"))
        assert op_id not in page.url
        expect(page.locator(".bulkops-lead")).to_contain_text(f"Undo of {op_id}")
        finish_worker(start_worker(env))
        expect(page.locator('[data-field="status"]')).to_have_text(
            re.compile("completed", re.I), timeout=30_000
        )
        expect(page.locator("#left-out")).to_contain_text("note-2")  # as previewed
        state = shell_json(env, NOTES_STATE)
        assert state["deleted"] == {
            "note-0": False,
            "note-1": False,
            "note-2": False,
            "note-3": False,
        }
        assert state["undo"] == [{"status": "completed", "succeeded": 2, "failed": 0}]
        page.goto(f"{base}/admin/bulkops/bulkoperation/{op_id}/progress/")
        expect(page.locator("a.bulkops-undo")).to_have_count(0)  # undone once
        expect(page.locator(".bulkops-undone-by")).to_contain_text("Undone by")
    finally:
        context.close()


SET_NOTE_2_RESTORED = """
from bulkops.models import Session
Session.objects.filter(pk="note-2").update(deleted_at=None)
"""
