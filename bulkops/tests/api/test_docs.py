"""Who may read the API's description (BULKOPS_API_DOCS), and that Swagger UI is served
from this server alone, under the Content-Security-Policy, with nothing inline."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from bulkops.tests.support.api import token_client

pytestmark = pytest.mark.django_db

DOCS = "/api/docs/"
SCHEMA = "/api/schema/"
PAGES = (SCHEMA, DOCS, DOCS + "?script=")


@pytest.fixture
def staff_mode(settings):
    settings.BULKOPS_API_DOCS = "staff"


def statuses(client) -> list[int]:
    return [client.get(path).status_code for path in PAGES]


def test_public_docs_are_readable_by_anyone(settings, owner):
    settings.BULKOPS_API_DOCS = "public"
    assert statuses(APIClient()) == [200, 200, 200]
    assert statuses(token_client(owner)) == [200, 200, 200]


def test_staff_docs_refuse_anonymous_clients(staff_mode):
    # Session authentication comes first, so DRF answers 403, not 401 (no challenge).
    assert statuses(APIClient()) == [403, 403, 403]
    response = APIClient().get(SCHEMA, HTTP_ACCEPT="application/json")
    assert "paths" not in response.json()


def test_staff_docs_refuse_authenticated_non_staff(staff_mode, owner, client):
    assert statuses(token_client(owner)) == [403, 403, 403]
    client.force_login(owner)
    assert statuses(client) == [403, 403, 403]
    body = token_client(owner).get(SCHEMA, HTTP_ACCEPT="application/json").json()
    assert body["detail"] == "The API documentation is available to staff only."


def test_staff_docs_are_readable_by_staff_with_a_session_or_a_token(staff_mode, make_user, client):
    staff = make_user("docs-staff", staff=True)
    client.force_login(staff)
    assert statuses(client) == [200, 200, 200]
    assert statuses(token_client(staff)) == [200, 200, 200]
    schema = token_client(staff).get(SCHEMA, HTTP_ACCEPT="application/json").json()
    assert "/api/bulk/sessions/delete" in schema["paths"]


def test_staff_docs_refuse_an_inactive_staff_member(staff_mode, make_user, client):
    staff = make_user("gone-staff", staff=True)
    client.force_login(staff)
    staff.is_active = False
    staff.save(update_fields=["is_active"])
    assert statuses(client) == [403, 403, 403]


def test_an_unknown_mode_fails_closed(settings, owner):
    settings.BULKOPS_API_DOCS = "everyone"
    assert statuses(APIClient()) == [403, 403, 403]
    assert statuses(token_client(owner)) == [403, 403, 403]


def test_the_docs_page_loads_only_local_files_and_no_inline_script(settings, client):
    settings.BULKOPS_API_DOCS = "public"
    response = client.get(DOCS)
    html = response.content.decode()
    assert "cdn" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert [re.search(r'src="([^"]+)"', attrs).group(1) for attrs, _ in scripts] == [
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-standalone-preset.js",
        "/api/docs/?script=",
    ]
    assert all(body.strip() == "" for _, body in scripts), "an inline script"
    stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert stylesheets == ["/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css"]


def test_the_docs_page_is_served_with_its_policy_and_nonce(settings, client):
    settings.BULKOPS_API_DOCS = "public"
    response = client.get(DOCS)
    policy = response["Content-Security-Policy"]
    nonce = re.search(r"<style nonce=\"([^\"]+)\">", response.content.decode()).group(1)
    assert f"'nonce-{nonce}'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    script = client.get(DOCS + "?script=")
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()


def test_the_sidecar_assets_are_static_files():
    from django.contrib.staticfiles import finders

    for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert finders.find(f"drf_spectacular_sidecar/swagger-ui-dist/{name}"), name


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DEBUG": "1"}, "public"),
        ({"DEBUG": "0"}, "staff"),
        ({"DEBUG": "0", "BULKOPS_API_DOCS": "public"}, "public"),
        ({"DEBUG": "1", "BULKOPS_API_DOCS": "everyone"}, "ImproperlyConfigured"),
    ],
)
def test_the_mode_defaults_to_staff_when_debug_is_off(env, expected):
    """settings.py reads BULKOPS_API_DOCS once, at start-up: a fresh interpreter each."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import django\n"
        "from django.core.exceptions import ImproperlyConfigured\n"
        "try:\n"
        "    django.setup()\n"
        "    from django.conf import settings\n"
        "    print(settings.BULKOPS_API_DOCS)\n"
        "except ImproperlyConfigured:\n"
        "    print('ImproperlyConfigured')\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "BULKOPS_API_DOCS")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", "SECRET_KEY": "k" * 50, **env},
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == expected, result.stderr
