"""The embedded default end to end: `serve` as a real process, `bulk --wait` against it.

This is the README's promise: one command runs the product, and in a second terminal
`bulk close --user demo --filter status=active --wait` runs to completed — executed by
the server's in-process worker, or by a separate db_worker when serve runs without one.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bulkops.tests.support.helpers import free_port

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[3]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        BULKOPS_EXPORT_DIR=str(tmp_path / "exports"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _active_demo_sessions(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        (active,) = conn.execute(
            "SELECT count(*) FROM bulkops_session s JOIN auth_user u ON u.id = s.owner_id "
            "WHERE u.username = 'demo' AND s.status = 'active' AND s.deleted_at IS NULL"
        ).fetchone()
        (closed,) = conn.execute(
            "SELECT count(*) FROM bulkops_session s JOIN auth_user u ON u.id = s.owner_id "
            "WHERE u.username = 'demo' AND s.status = 'closed'"
        ).fetchone()
    return active, closed


def _popen(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        _manage(*args),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _bulk_close_active_and_wait(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        _manage("bulk", "close", "--user", "demo", "--filter", "status=active", "--wait",
                "--timeout", "90"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("worker", ["in_process", "separate_db_worker"])
def test_serve_then_bulk_close_wait_runs_to_completed(tmp_path, worker):
    env = _env(tmp_path)
    port = free_port()
    separate = worker == "separate_db_worker"
    server = _popen(["serve", "--port", str(port), *(["--no-worker"] if separate else [])], env)
    db_worker = None
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/admin/login/", server)
        if separate:
            db_worker = _popen(["db_worker", "--no-reload", "--interval", "0.1"], env)
        active_before, closed_before = _active_demo_sessions(tmp_path / "db.sqlite3")
        assert active_before > 100  # the demo data: a few hundred sessions in all states
        result = _bulk_close_active_and_wait(env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "100.0%" in result.stdout
        assert f"completed: {active_before} succeeded, 0 skipped, 0 failed" in result.stdout
        active_after, closed_after = _active_demo_sessions(tmp_path / "db.sqlite3")
        assert active_after == 0
        assert closed_after == closed_before + active_before
    finally:
        banner = _stop(server)
        if db_worker is not None:
            _stop(db_worker)
    assert f"http://127.0.0.1:{port}/admin/" in banner
    assert f"ws://127.0.0.1:{port}/ws/bulk/" in banner
    assert "demo / " in banner


def test_with_debug_off_the_admin_gets_its_static_files_from_whitenoise(tmp_path):
    env = _env(tmp_path)
    env.update(
        DEBUG="0",
        SECRET_KEY="test-only-secret-key-with-enough-length-and-variety-0123456789",
        ALLOWED_HOSTS="127.0.0.1",
        # Plain HTTP on loopback in this test; production keeps the secure defaults.
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
    )
    port = free_port()
    server = subprocess.Popen(
        _manage("serve", "--no-demo", "--port", str(port)),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{base}/admin/login/", server, timeout=120)
        with urllib.request.urlopen(f"{base}/admin/login/", timeout=5) as response:
            page = response.read().decode()
        stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page)
        assert any("admin/css/base" in href for href in stylesheets), page[:500]
        for href in stylesheets:
            with urllib.request.urlopen(base + href, timeout=5) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/css")
                assert len(response.read()) > 100
    finally:
        _stop(server)


def test_the_banner_links_the_api_login_and_every_request_is_logged(tmp_path):
    """The "API:" line is the browsable API's login, which any demo user passes (``demo``
    is not staff: the admin's login would refuse it) to land on the API; each request is
    then a line of serve's output, as daphne's own access log prints it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            _manage("serve", "--port", str(port)), cwd=ROOT, env=_env(tmp_path), stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for_http(f"{base}/healthz", server)
        banner = log.read_text()
        api = re.search(r"API:\s+(\S+)", banner).group(1)
        assert api == f"{base}/api-auth/login/?next=/api/bulk/sessions/info"
        password = re.search(r"demo / (\S+)", banner).group(1)
        page = _log_in_with_a_browser_form(api, "demo", password)
        assert page.geturl() == f"{base}/api/bulk/sessions/info"
        assert page.headers["Content-Type"].startswith("text/html")  # the browsable API
        assert "&quot;sessions&quot;" in page.read().decode()  # the info, as HTML
    finally:
        _stop(server)
    lines = log.read_text().splitlines()
    for request in (
        '"GET /api-auth/login/?next=/api/bulk/sessions/info" 200 ',
        '"POST /api-auth/login/" 302 ',
        '"GET /api/bulk/sessions/info" 200 ',
    ):
        assert any(request in line and line.startswith("127.0.0.1:") for line in lines), request


def _log_in_with_a_browser_form(url: str, username: str, password: str):
    """GET the login form, POST it back with its CSRF token and cookie, follow the
    redirect; return the final response."""
    import http.cookiejar
    import urllib.parse

    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with browser.open(url, timeout=10) as form:
        html = form.read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    fields = {"csrfmiddlewaretoken": csrf, "username": username, "password": password,
              "next": "/api/bulk/sessions/info"}  # fmt: skip
    request = urllib.request.Request(
        url.split("?")[0],
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Referer": url, "Accept": "text/html"},
    )
    return browser.open(request, timeout=10)
