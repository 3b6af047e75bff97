"""archive: lossless zstandard compression of content, and eligibility."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bulkops.actions.archive import compress_content, decompress_content
from bulkops.models import Session
from bulkops.tests.support.helpers import execute, outcomes

pytestmark = pytest.mark.django_db

PAYLOADS = {
    "empty": "",
    "ascii": "The quick brown fox jumps over the lazy dog.\n" * 3,
    "multibyte": "Grüße, 世界! 🚀 ñandú — ∑ αβγ end",
    "five_mb": ("abcdefghij" * 100 + "\n") * 5000,  # ~5 MB
}


@pytest.mark.parametrize("name", PAYLOADS)
def test_compress_round_trip_is_exact(name):
    text = PAYLOADS[name]
    blob, size = compress_content(text)
    assert size == len(text.encode("utf-8"))
    assert decompress_content(blob) == text


def test_compress_round_trip_keeps_control_characters():
    # (PostgreSQL text cannot hold NUL, so this one is checked on the function alone.)
    text = "a\u0000b\r\n\tc"
    assert decompress_content(compress_content(text)[0]) == text


@pytest.mark.parametrize("name", PAYLOADS)
def test_archive_stores_blob_empties_content_and_round_trips(owner, make_session, name):
    text = PAYLOADS[name]
    s = make_session(owner, content=text)
    op = execute(owner, "archive", [s.pk])
    assert op.status == "completed"
    s.refresh_from_db()
    assert s.status == "archived"
    assert s.archived_at is not None
    assert s.content == ""
    assert s.archive_original_size == len(text.encode("utf-8"))
    assert s.archive_compressed_size == len(bytes(s.archive_blob))
    assert decompress_content(s.archive_blob) == text


def test_archive_compresses_large_content(owner, make_session):
    s = make_session(owner, content=PAYLOADS["five_mb"])
    execute(owner, "archive", [s.pk])
    s.refresh_from_db()
    assert s.archive_compressed_size < s.archive_original_size / 10


def test_archive_eligibility(owner, stranger, make_session):
    ok = make_session(owner, status="closed")
    done = make_session(owner, status="archived")
    busy = make_session(owner, status="processing")
    gone = make_session(owner, deleted=True)
    theirs = make_session(stranger)
    op = execute(owner, "archive", [ok.pk, done.pk, busy.pk, gone.pk, theirs.pk])
    assert outcomes(op) == {
        ok.pk: ("succeeded", ""),
        done.pk: ("skipped", "already_archived"),
        busy.pk: ("failed", "processing"),
        gone.pk: ("failed", "deleted"),
        theirs.pk: ("failed", "not_found"),
    }
    assert op.status == "partial"
    assert Session.objects.get(pk=busy.pk).content == "hello"
    assert Session.objects.get(pk=theirs.pk).status == "active"


def test_a_chunk_reads_the_sessions_once_their_content_with_their_locks(owner, make_session):
    """The chunk's locking read carries the content that archive compresses: the
    session table is read once per chunk (not locked, then read again for the
    content), and every eligible session gets its own content back."""
    texts = [f"notes {n} " * (n + 1) for n in range(6)]
    sessions = [make_session(owner, content=text) for text in texts]
    done = make_session(owner, status="archived", content="")
    with CaptureQueriesContext(connection) as queries:
        op = execute(owner, "archive", [s.pk for s in [*sessions, done]])
    table = f'FROM "{Session._meta.db_table}"'
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert len([sql for sql in reads if table in sql]) == 1
    assert (op.succeeded, op.skipped) == (6, 1)
    for session, text in zip(sessions, texts, strict=True):
        session.refresh_from_db()
        assert (session.status, session.content) == ("archived", "")
        assert decompress_content(session.archive_blob) == text
