"""The bulk-operation engine, as a package.

Every writer of operations — the API, the admin, the ``bulk`` command, the worker —
goes through these functions, so eligibility, limits and records are the same
everywhere. They take keyword-only arguments and raise Django / ``bulkops.exceptions``
errors; the interfaces shape responses.
"""

from bulkops.engine.cleanup import CleanupResult, operations_cleanup
from bulkops.engine.eligibility import Partition, action_build
from bulkops.engine.executor import operation_execute
from bulkops.engine.idempotency import Started, operation_replay, request_fingerprint
from bulkops.engine.inputs import (
    FILTER_KEYS,
    MAX_FAILURES,
    MAX_FAILURES_LIMIT,
    clean_max_failures,
    clean_session_ids,
    filter_from_text,
    parse_moment,
    session_ids_problem,
)
from bulkops.engine.large.counts import SAMPLES_PER_REASON
from bulkops.engine.large.scope import LARGE_OPERATION_PERMISSION, may_run_large
from bulkops.engine.operations import (
    clean_reason,
    operation_cancel,
    operation_create,
    operation_retry,
    retry_refusal,
    retryable_items,
)
from bulkops.engine.pausing import operation_pause, operation_resume
from bulkops.engine.preview import ValidationResult, operation_validate
from bulkops.engine.recovery import operation_hand_off, operation_reap_stale
from bulkops.engine.report import REPORT_FORMATS, operation_report, report_filename
from bulkops.engine.selection import (
    MAX_OWNER_LENGTH,
    Selection,
    SessionFilterSet,
    owner_users,
    selection_queryset,
    selection_resolve,
)
from bulkops.engine.undo import operation_undo, undo_deadline, undo_refusal, undone_by

__all__ = [
    "FILTER_KEYS",
    "LARGE_OPERATION_PERMISSION",
    "MAX_FAILURES",
    "MAX_FAILURES_LIMIT",
    "MAX_OWNER_LENGTH",
    "REPORT_FORMATS",
    "SAMPLES_PER_REASON",
    "CleanupResult",
    "Partition",
    "Selection",
    "SessionFilterSet",
    "Started",
    "ValidationResult",
    "action_build",
    "clean_max_failures",
    "clean_reason",
    "clean_session_ids",
    "filter_from_text",
    "may_run_large",
    "operation_cancel",
    "operation_create",
    "operation_execute",
    "operation_hand_off",
    "operation_pause",
    "operation_reap_stale",
    "operation_replay",
    "operation_report",
    "operation_resume",
    "operation_retry",
    "operation_undo",
    "operation_validate",
    "operations_cleanup",
    "owner_users",
    "parse_moment",
    "report_filename",
    "request_fingerprint",
    "retry_refusal",
    "retryable_items",
    "selection_queryset",
    "selection_resolve",
    "session_ids_problem",
    "undo_deadline",
    "undo_refusal",
    "undone_by",
]
