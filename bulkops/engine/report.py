"""``operation_report``: every item of an operation (session_id, outcome, reason,
message) as CSV or JSON, produced piece by piece for a streaming response.

Items are read piece by piece (``itemstore.item_rows``: a server-side cursor over the
items, or a range of a large operation's chunks at a time), so memory stays flat however
many items there are. CSV cells are neutralised like export's (a cell a
spreadsheet would run as a formula becomes text).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from bulkops.actions.export import neutralise
from bulkops.itemstore import item_rows
from bulkops.models import BulkOperation, ItemOutcome

REPORT_FORMATS = ("csv", "json")
REPORT_FIELDS = ("session_id", "outcome", "reason", "message")
#: Items per database round trip, and rows per yielded piece.
REPORT_CHUNK = 2000


def report_filename(operation: BulkOperation, fmt: str) -> str:
    return f"report_{operation.pk}.{fmt}"


def _rows(operation: BulkOperation, outcome: str | None) -> Iterator[tuple[str, ...]]:
    return item_rows(operation=operation, outcome=outcome, fields=REPORT_FIELDS, batch=REPORT_CHUNK)


def _csv(rows: Iterator[tuple[str, ...]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REPORT_FIELDS)
    for n, row in enumerate(rows, start=1):
        writer.writerow([neutralise(cell) for cell in row])
        if n % REPORT_CHUNK == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def _json(operation: BulkOperation, rows: Iterator[tuple[str, ...]]) -> Iterator[bytes]:
    head = {"operation_id": operation.pk, "action": operation.action, "status": operation.status}
    yield (json.dumps(head)[:-1] + ', "items": [').encode("utf-8")
    pieces: list[str] = []
    for n, row in enumerate(rows):
        pieces.append(("," if n else "") + json.dumps(dict(zip(REPORT_FIELDS, row, strict=True))))
        if len(pieces) == REPORT_CHUNK:
            yield "".join(pieces).encode("utf-8")
            pieces = []
    yield ("".join(pieces) + "]}").encode("utf-8")


async def _one_by_one(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    end = object()
    while (piece := await sync_to_async(next)(pieces, end)) is not end:
        yield piece  # type: ignore[misc]


def operation_report(
    *,
    operation: BulkOperation,
    fmt: str,
    outcome: str | None = None,
    asynchronous: bool = False,
) -> Iterator[bytes] | AsyncIterator[bytes]:
    """The report of ``operation`` in ``fmt`` (``csv`` or ``json``), optionally only
    the items of one ``outcome``, as UTF-8 pieces. CSV: a header row, then one row per
    item; JSON: ``{"operation_id", "action", "status", "items": [{…}, …]}``.

    ``asynchronous`` (served under ASGI): an async iterator reading one piece per thread
    hop — Django reads a synchronous one whole into memory before an ASGI response.

    Raise ValidationError for any other format or outcome (an empty one included)."""
    if fmt not in REPORT_FORMATS:
        raise ValidationError({"format": "The report format must be csv or json."})
    if outcome is not None and outcome not in ItemOutcome.values:
        choices = ", ".join(ItemOutcome.values)
        raise ValidationError({"outcome": f"The outcome must be one of {choices}."})
    rows = _rows(operation, outcome)
    pieces = _csv(rows) if fmt == "csv" else _json(operation, rows)
    return _one_by_one(pieces) if asynchronous else pieces
