"""What the views of the bulk API share: JSON-only bodies, the ``Idempotency-Key``
header, the 202 answer of a started operation, and file answers.

Errors are raised as the engine raises them and turned into responses by
``bulkops.api.exceptions``.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpResponseBase
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bulkops.actions import get_action
from bulkops.api import schema as api_schema  # noqa: F401  (registers the extensions)
from bulkops.api import serializers as s
from bulkops.api.parsers import JSONParser
from bulkops.api.schema import REPLAYED_HEADER, BulkAutoSchema
from bulkops.engine import Selection, Started
from bulkops.representations import operation_accepted

IDEMPOTENCY_KEY_RE = re.compile(r"[!-~]{1,255}")
#: A download's Content-Type by the file name's last suffix (a large export's is gzip).
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "gz": "application/gzip",
}


class JSONBodyView(APIView):
    """POST bodies are JSON only (anything else: 415)."""

    parser_classes = [JSONParser]
    schema = BulkAutoSchema()


class IgnoreAcceptNegotiation(BaseContentNegotiation):
    """A download is a file whatever the client accepts; errors are JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class FileView(APIView):
    """A view that answers a file: whatever the client accepts, the file (or a JSON
    error)."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, or None; 400 when it is not 1–255 visible ASCII."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ValidationError(
            {"Idempotency-Key": ["Must be 1–255 visible ASCII characters (no spaces)."]}
        )
    return key


def accepted(started: Started, *, key: str | None = None) -> Response:
    """202 with ``Location`` = the status URL and the operation's accepted body; with an
    Idempotency-Key, ``Idempotent-Replayed: true`` when an earlier request with that key
    started the operation, ``false`` when this one did."""
    operation = started.operation
    data = operation_accepted(operation)
    out = s.accepted_serializer_for(get_action(operation.action))
    headers = {"Location": data["status_url"]}
    if key is not None:
        headers[REPLAYED_HEADER] = "true" if started.replayed else "false"
    return Response(out(data).data, status=status.HTTP_202_ACCEPTED, headers=headers)


def selection_of(data: dict[str, Any]) -> Selection:
    """The engine's ``Selection`` of a validated selection body."""
    flt = data.get("filter")
    return Selection(
        session_ids=data.get("session_ids"), filter=dict(flt) if flt is not None else None
    )


def no_body(request: Request) -> None:
    """400 unless the body is absent or ``{}`` (see ``NoBodySerializer``)."""
    s.NoBodySerializer(data=request.data).is_valid(raise_exception=True)


def private_file(response: HttpResponseBase) -> HttpResponseBase:
    """A file answer is the user's own: never sniffed, never cached."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
