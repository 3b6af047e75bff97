"""GET /api/download/{filename}: the owner (or staff allowed to view sessions) gets the
file as an attachment; everyone and everything else gets 404, 409 or 410."""

from __future__ import annotations

import csv
import io

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bulkops.models import BulkOperation
from bulkops.tests.support import api as support
from bulkops.tests.support.api import ACTION_PATHS, post_json, token_client
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def export(api, ids: list[str], fmt: str = "csv") -> dict:
    response = post_json(api, ACTION_PATHS["export"], {"session_ids": ids, "format": fmt})
    assert response.status_code == 202
    return response.json()


def content(response) -> bytes:
    assert response.streaming  # FileResponse: streamed, not read into memory
    return b"".join(response.streaming_content)


@pytest.fixture
def finished(api, owner, make_session) -> dict:
    sessions = [make_session(owner, title=f"=cmd{i}") for i in range(2)]
    data = export(api, [s.pk for s in sessions])
    run_worker()
    return data


def test_owner_downloads_the_csv_as_an_attachment(api, finished):
    response = api.get(finished["download_url"], HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    filename = finished["download_url"].rsplit("/", 1)[1]
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    rows = list(csv.DictReader(io.StringIO(content(response).decode())))
    assert sorted(r["title"] for r in rows) == ["'=cmd0", "'=cmd1"]


def test_json_export_downloads_as_json(api, owner, make_session):
    data = export(api, [make_session(owner).pk], fmt="json")
    run_worker()
    response = api.get(data["download_url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert content(response).lstrip().startswith(b"[")


def test_staff_with_view_permission_may_download(finished, make_user):
    staff = make_user("auditor", staff=True, perms=("bulkops.view_session",))
    assert token_client(staff).get(finished["download_url"]).status_code == 200


@pytest.mark.parametrize("who", ["stranger", "staff without permission", "anonymous"])
def test_others_get_404(finished, stranger, make_user, who):
    client = {
        "stranger": lambda: token_client(stranger),
        "staff without permission": lambda: token_client(make_user("plainstaff", staff=True)),
        "anonymous": APIClient,
    }[who]()
    assert client.get(finished["download_url"]).status_code in (
        (401, 403) if who == "anonymous" else (404,)
    )


def test_malformed_or_unknown_names_are_404(api, finished):
    real = finished["download_url"].rsplit("/", 1)[1]
    op_id = finished["operation_id"]
    for name in [
        real.replace(".csv", ".txt"),
        real.replace(".csv", ".json"),
        real.replace("session_export_", "session_export_1"),
        f"session_export_19990101_{op_id}.csv",
        "session_export_20240101_op-" + "0" * 32 + ".csv",
        "..%2F..%2Fsettings.py",
        "%2Fetc%2Fpasswd",
        "session_export_20240101_op-abc.csv%00.txt",
    ]:
        assert api.get(f"/api/download/{name}").status_code == 404, name


def test_expired_export_is_410(api, finished):
    BulkOperation.objects.filter(pk=finished["operation_id"]).update(
        expires_at=timezone.now() - timezone.timedelta(seconds=1)
    )
    response = api.get(finished["download_url"])
    assert response.status_code == 410
    assert "expired" in response.json()["detail"]


def test_unfinished_export_is_409(api, owner, make_session):
    data = export(api, [make_session(owner).pk])
    response = api.get(data["download_url"])
    assert response.status_code == 409
    assert data["status_url"] in response.json()["detail"]
