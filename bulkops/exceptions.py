"""Errors the services raise; only the API layer turns them into HTTP responses."""

from django.core.exceptions import PermissionDenied, ValidationError

__all__ = [
    "BulkOpsError",
    "ExportFileError",
    "IdempotencyConflict",
    "OperationConflict",
    "OperationNotFound",
    "PermissionDenied",
    "RateLimited",
    "TooManyActiveOperations",
    "ValidationError",
]


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
