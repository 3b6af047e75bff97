"""Reason codes an item can end with, and the sentence a person reads for each."""

from django.utils.translation import gettext_lazy as _

NOT_FOUND = "not_found"
DELETED = "deleted"
PROCESSING = "processing"
ARCHIVED = "archived"
HAS_EXPORTS = "has_exports"
PERMISSION_DENIED = "permission_denied"
ALREADY_CLOSED = "already_closed"
ALREADY_ARCHIVED = "already_archived"
ALREADY_DELETED = "already_deleted"
NOT_DELETED = "not_deleted"
ATOMIC_ROLLBACK = "atomic_rollback"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
INTERNAL_ERROR = "internal_error"
LOCKED = "locked"
FAILURE_THRESHOLD = "failure_threshold"
CHANGED_SINCE = "changed_since"

MESSAGES = {
    NOT_FOUND: _("No such session."),
    DELETED: _("The session is deleted; restore it first."),
    PROCESSING: _("A pipeline is working on this session; try again when it is done."),
    ARCHIVED: _("The session is archived."),
    HAS_EXPORTS: _("The session has exports; delete them too with cascade_exports."),
    PERMISSION_DENIED: _("Hard delete needs the bulkops.hard_delete_session permission."),
    ALREADY_CLOSED: _("The session is already closed."),
    ALREADY_ARCHIVED: _("The session is already archived."),
    ALREADY_DELETED: _("The session is already deleted."),
    NOT_DELETED: _("The session is not deleted."),
    ATOMIC_ROLLBACK: _("Not applied: another item of this all-or-nothing operation failed."),
    CANCELLED: _("The operation was cancelled before this session was processed."),
    TIMEOUT: _("The operation ran out of time before this session was processed."),
    INTERNAL_ERROR: _("The operation stopped on an internal error before this session."),
    LOCKED: _(
        "Another transaction held this session longer than BULKOPS_LOCK_TIMEOUT; "
        "retry the failed items."
    ),
    FAILURE_THRESHOLD: _(
        "Not processed: more sessions failed than the operation's max_failures allows."
    ),
    CHANGED_SINCE: _(
        "The session changed after the operation being undone (it is no longer as that "
        "operation left it); it was not touched."
    ),
}


def message_for(reason: str) -> str:
    return str(MESSAGES.get(reason, reason))
