"""README's production layout, followed literally: collectstatic, then daphne with
DEBUG=0 — on plain HTTP with the documented toggles, and with the defaults (HTTPS)."""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request

import pytest

from bulkops.tests.support.processes import using_postgres, using_redis

pytestmark = pytest.mark.processes

PLAIN_HTTP = {"SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str) -> tuple[int, dict, bytes]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_without_collectstatic_daphne_refuses_to_start_and_says_why(world, tmp_path):
    _, procs = world(
        postgres=using_postgres(),
        redis=False,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        STATIC_ROOT=str(tmp_path / "never-collected"),
    )
    with pytest.raises(AssertionError, match="collectstatic"):
        procs.server("daphne")


@pytest.fixture
def production(world, tmp_path):
    _, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        STATIC_ROOT=str(tmp_path / "static"),
    )
    procs.run("migrate", "--no-input", "-v", "0")
    procs.run("collectstatic", "--no-input", "-v", "0")
    return procs


def test_on_plain_http_with_the_documented_toggles_the_admin_works(production):
    base = production.server("daphne", env=PLAIN_HTTP)
    status, _, body = get(f"{base}/admin/login/")
    assert status == 200, body[:300]
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', body.decode())
    assert stylesheets and all(get(base + href)[0] == 200 for href in stylesheets)
    status, _, body = get(f"{base}/healthz")
    assert status == 200 and b'"status": "ok"' in body


def test_with_the_defaults_plain_http_is_redirected_but_health_is_not(production):
    base = production.server("daphne")
    status, headers, _ = get(f"{base}/admin/login/")
    assert status == 301 and headers["Location"].startswith("https://")
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/metrics")[0] == 200
