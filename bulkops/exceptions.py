"""Errors the services raise; only the API layer turns them into HTTP responses, and
``error_text`` is how the admin and the ``bulk`` command put one in a line of text."""

from django.core.exceptions import PermissionDenied, ValidationError

__all__ = [
    "BulkOpsError",
    "ExportFileError",
    "IdempotencyConflict",
    "OperationConflict",
    "OperationNotFound",
    "PermissionDenied",
    "RateLimited",
    "SelectionConflict",
    "SelectionDrift",
    "SelectionTokenExpired",
    "SelectionTokenInvalid",
    "TooManyActiveOperations",
    "ValidationError",
    "error_text",
]

#: Keys of a ValidationError's dict that name no one input.
NON_FIELD_KEYS = frozenset({"__all__", "non_field_errors"})


class BulkOpsError(Exception):
    """Base of the errors below; ``message`` is meant for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OperationNotFound(BulkOpsError):
    """No such operation for this user (someone else's looks exactly the same)."""


class OperationConflict(BulkOpsError):
    """The operation is not in a state that allows this (e.g. cancelling a finished one)."""


class IdempotencyConflict(BulkOpsError):
    """The Idempotency-Key was already used by this user for a different request."""


class ExportFileError(BulkOpsError):
    """The export file could not be written (disk full, read-only, not a directory);
    the message says why without naming server paths."""


class RateLimited(BulkOpsError):
    """Too many requests; ``retry_after`` is the number of seconds to wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class TooManyActiveOperations(RateLimited):
    """The user already has the maximum number of pending/running operations."""


class SelectionConflict(BulkOpsError):
    """What the caller confirmed (a ``selection_token``) no longer holds: nothing was
    created; validate again (409)."""


class SelectionDrift(SelectionConflict):
    """The selection no longer resolves to the ids, in the partition, that validate saw.
    ``previous`` and ``current`` are ``{total, eligible_count, skipped_count,
    ineligible_count}``."""

    def __init__(self, message: str, *, previous: dict[str, int], current: dict[str, int]):
        super().__init__(message)
        self.previous = previous
        self.current = current


class SelectionTokenExpired(SelectionConflict):
    """The ``selection_token`` is older than ``BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS``."""


class SelectionTokenInvalid(ValidationError):
    """The ``selection_token`` is not one validate issued for this user, action and
    options (tampered, garbage, another user's, another action's): a 400 naming it."""

    def __init__(self, message: str) -> None:
        super().__init__({"selection_token": message}, code="invalid")


def error_text(exc: ValidationError | BulkOpsError) -> str:
    """The error as one line for a person: a BulkOpsError's message; a ValidationError's
    messages, each after the input it is about (``filter.status: Must be …``; the
    engine's rules do not name the input themselves)."""
    if isinstance(exc, BulkOpsError):
        return exc.message
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages)
    return "; ".join(
        " ".join(messages) if key in NON_FIELD_KEYS else f"{key}: {' '.join(messages)}"
        for key, messages in exc.message_dict.items()
    )
