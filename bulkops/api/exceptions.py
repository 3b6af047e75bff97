"""Turn the engine's errors into DRF responses: always a 4xx a person can
act on, never a 500.

- ``RateLimited`` (and ``TooManyActiveOperations``), DRF's ``Throttled`` → 429 with
  ``Retry-After`` and a JSON body;
- Django ``ValidationError`` → 400 with field errors;
- ``OperationNotFound`` → 404; ``OperationConflict`` → 409; ``IdempotencyConflict`` → 422;
- ``SelectionDrift`` → 409 ``selection_drift`` with ``previous_count``/``current_count``
  (and both partitions); ``SelectionTokenExpired`` → 409 ``selection_token_expired``
  (``SelectionTokenInvalid`` is a ValidationError: 400 naming ``selection_token``);
- Django ``RequestDataTooBig`` (a body read past ``DATA_UPLOAD_MAX_MEMORY_SIZE``) → 413;
- Django ``PermissionDenied`` → 403 (DRF's own mapping);
- the database unreachable (``OperationalError``, ``InterfaceError``) → 503, ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from bulkops.conf import bulkops_settings
from bulkops.exceptions import (
    IdempotencyConflict,
    OperationConflict,
    OperationNotFound,
    RateLimited,
    SelectionConflict,
    SelectionDrift,
    TooManyActiveOperations,
)
from bulkops.middleware import too_large_body


class Gone(APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "This resource has expired."
    default_code = "gone"


def _validation_detail(exc: DjangoValidationError) -> Any:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
    return {"non_field_errors": [str(m) for m in exc.messages]}


def _too_many(detail: str, code: str, retry_after: int) -> Response:
    response = Response(
        {"detail": detail, "code": code, "retry_after": retry_after},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(retry_after)
    return response


def _selection_conflict(exc: SelectionConflict) -> Response:
    if isinstance(exc, SelectionDrift):
        body = {
            "detail": exc.message,
            "code": "selection_drift",
            "previous_count": exc.previous["total"],
            "current_count": exc.current["total"],
            "previous": exc.previous,
            "current": exc.current,
        }
    else:
        body = {"detail": exc.message, "code": "selection_token_expired"}
    return Response(body, status=status.HTTP_409_CONFLICT)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the mapping above."""
    if isinstance(exc, RateLimited):
        code = (
            "too_many_active_operations"
            if isinstance(exc, TooManyActiveOperations)
            else ("rate_limited")
        )
        return _too_many(exc.message, code, exc.retry_after)
    if isinstance(exc, Throttled):
        return _too_many(str(exc.detail), "rate_limited", int(exc.wait or 1))
    if isinstance(exc, DjangoValidationError):
        return Response(_validation_detail(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            too_large_body(bulkops_settings.MAX_REQUEST_BYTES),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, OperationNotFound):
        return Response(
            {"detail": exc.message, "code": "not_found"}, status=status.HTTP_404_NOT_FOUND
        )
    if isinstance(exc, OperationConflict):
        return Response(
            {"detail": exc.message, "code": "conflict"}, status=status.HTTP_409_CONFLICT
        )
    if isinstance(exc, SelectionConflict):
        return _selection_conflict(exc)
    if isinstance(exc, IdempotencyConflict):
        return Response(
            {"detail": exc.message, "code": "idempotency_conflict"},
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is away (restart, failover): a JSON 503 the client can retry,
        # not an HTML 500; nothing was half done (each request is one transaction).
        response = Response(
            {"detail": "The database is unavailable; try again shortly.", "code": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = "5"
        return response
    return drf_exception_handler(exc, context)
