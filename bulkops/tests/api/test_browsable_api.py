"""The browsable API and its login write nothing inline — no ``<style>``, no ``style=""``,
no ``on…=`` handler — so the Content-Security-Policy (``style-src 'self'``, no inline
script) refuses nothing on them (in Chromium: admin/test_csp_browser.py)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

INLINE = re.compile(r"<style|\sstyle\s*=|\son[a-z]+\s*=", re.I)
PAGES = (
    "/api/bulk/sessions/info",
    "/api/sessions/",  # with the Filters button and dialog
    "/api/bulk/operations/",
    "/api/bulk/sessions/close",  # GET: 405, the page with its request form
)


def inline_bits(html: str) -> list[str]:
    return [html[max(m.start() - 40, 0) : m.end() + 40] for m in INLINE.finditer(html)]


def test_the_login_page_writes_nothing_inline():
    response = Client().get("/api-auth/login/?next=/api/bulk/sessions/info")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="next" value="/api/bulk/sessions/info"' in html
    assert inline_bits(html) == []


@pytest.mark.parametrize("path", PAGES)
def test_the_browsable_api_writes_nothing_inline(client, owner, path):
    client.force_login(owner)
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "api-logout" in html  # the Log out form that replaces DRF's onclick link
    assert inline_bits(html) == []


def test_log_out_is_a_post_form_that_logs_out(client, owner):
    client.force_login(owner)
    response = client.post("/api-auth/logout/?next=/api/sessions/")
    assert response.status_code in (200, 302)
    assert client.get("/api/sessions/", HTTP_ACCEPT="application/json").status_code == 403
