"""The OpenAPI declaration of every endpoint of the bulk API (drf-spectacular's
``extend_schema``), kept apart from the views so a view reads as what it does. Each
view module applies its endpoint's declaration; the building blocks every endpoint
shares (error answers, headers, the extensions for the strict fields) are
``bulkops.api.schema``'s.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)

from bulkops.actions.base import BulkAction
from bulkops.api import serializers as s
from bulkops.api.schema import (
    IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
    PAGE_PARAMS,
    RETRY_AFTER,
    errors,
)
from bulkops.engine import REPORT_FORMATS
from bulkops.engine.inputs import MAX_SEARCH_LENGTH
from bulkops.models import ItemOutcome

OPERATION_ID = OpenApiParameter(
    "operation_id",
    OpenApiTypes.STR,
    location=OpenApiParameter.PATH,
    pattern="^op-[0-9a-f]{32}$",
    description="The operation id (`op-` + 32 hex digits).",
)
TAG_ACTIONS = ["bulk actions"]
TAG_OPERATIONS = ["bulk operations"]
TAG_SESSIONS = ["sessions"]


def outcome_param() -> OpenApiParameter:
    return OpenApiParameter(
        "outcome",
        OpenApiTypes.STR,
        enum=list(ItemOutcome.values),
        description="Only items with this outcome.",
    )


# --- actions ------------------------------------------------------------------------------------
VALIDATE = extend_schema(
    tags=TAG_ACTIONS,
    summary="Preview an action: eligible, skipped and ineligible sessions",
    description="Changes nothing. For delete it also previews the exports that would go "
    "with the sessions (`cascade.exports`). A filter that matches nothing answers zero "
    "counts. `selection_token`: pass it to the action to run it only on exactly this "
    "partition. Rate-limited (`validate`).",
    request=s.ValidateInputSerializer,
    responses={200: s.ValidateOutputSerializer, **errors(400, 403, 413, 415, 429)},
    parameters=[RETRY_AFTER],
    examples=[
        OpenApiExample(
            "Close three sessions",
            value={"action": "close", "session_ids": ["demo-000000", "demo-000001", "nope"]},
            request_only=True,
        ),
        OpenApiExample(
            "Result",
            value={
                "action": "close",
                "eligible_count": 1,
                "ineligible_count": 1,
                "skipped_count": 1,
                "counts_by_reason": {"already_closed": 1, "not_found": 1},
                "lists_truncated": False,
                "eligible": [
                    {"session_id": "demo-000000", "title": "Mu session 0", "status": "active"}
                ],
                "eligible_ids": ["demo-000000"],
                "ineligible": [
                    {"session_id": "nope", "reason": "not_found", "message": "No such session."}
                ],
                "skipped": [{"session_id": "demo-000001", "reason": "already_closed"}],
                "estimated_duration_seconds": 0.2,
                "selection_token": "eyJ1IjoiNyIsImEiOiJjbG9zZSJ9:1tQx2b:3kzL9m_Qw",
            },
            response_only=True,
            status_codes=["200"],
        ),
    ],
)


def action_schema(action: type[BulkAction], input_serializer):
    name = action.action_type
    return extend_schema(
        tags=TAG_ACTIONS,
        summary=f"Start a bulk {name}",
        description=f"Creates a `{name}` operation and answers 202 with `Location` = its "
        "status URL. Rate-limited per user; at most "
        "`BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER` pending/running operations. With the "
        "`selection_token` validate answered, it starts only if the selection still "
        "resolves to the same sessions, each as eligible, skipped or not eligible as "
        "validated (else 409 with both counts, nothing created).",
        request=input_serializer,
        responses={
            202: OpenApiResponse(
                s.accepted_serializer_for(action),
                description="Accepted; poll `status_url` (also the Location header).",
            ),
            409: OpenApiResponse(
                s.SelectionConflictSerializer,
                description="The `selection_token` no longer holds (the selection drifted, "
                "or the token expired): nothing was created; validate again.",
            ),
            **errors(400, 403, 413, 415, 422, 429),
        },
        parameters=[
            IDEMPOTENCY_KEY,
            IDEMPOTENT_REPLAYED,
            RETRY_AFTER,
            OpenApiParameter(
                "Location",
                OpenApiTypes.STR,
                location=OpenApiParameter.HEADER,
                response=[202],
                description="The status URL.",
            ),
        ],
        examples=[
            OpenApiExample(f"{name} by ids", value=action.exposure.api_example, request_only=True)
        ],
    )


INFO = extend_schema(
    tags=TAG_ACTIONS,
    summary="Limits, the caller's rate limits and session counts",
    responses={200: s.InfoOutputSerializer, **errors(403)},
)


# --- operations ---------------------------------------------------------------------------------
OPERATION_LIST = extend_schema(
    tags=TAG_OPERATIONS,
    summary="The caller's operations, newest first",
    responses={200: s.OperationSerializer(many=True), **errors(400, 403, 404)},
)

OPERATION_DETAIL = extend_schema(
    tags=TAG_OPERATIONS,
    summary="One operation, with a page of its items",
    parameters=[OPERATION_ID, outcome_param(), *PAGE_PARAMS],
    responses={200: s.OperationDetailSerializer, **errors(400, 403, 404)},
)

OPERATION_ITEMS = extend_schema(
    tags=TAG_OPERATIONS,
    summary="The items of an operation (paginated)",
    parameters=[OPERATION_ID, outcome_param()],
    responses={200: s.OperationItemSerializer(many=True), **errors(400, 403, 404)},
)

OPERATION_STATUS = extend_schema(
    tags=TAG_OPERATIONS,
    summary="The status of an operation",
    description="The same representation the WebSocket events carry.",
    parameters=[OPERATION_ID],
    responses={200: s.OperationSerializer, **errors(403, 404)},
)

OPERATION_CANCEL = extend_schema(
    tags=TAG_OPERATIONS,
    summary="Cancel an operation",
    description="A pending operation is cancelled at once; a running one stops at its next "
    "chunk boundary (the remaining items end `cancelled`). 409 once finished.",
    request=s.NoBodySerializer,
    parameters=[OPERATION_ID],
    responses={
        202: OpenApiResponse(s.OperationSerializer, description="Cancelled, or cancelling."),
        **errors(400, 403, 404, 409, 415),
    },
)

OPERATION_PAUSE = extend_schema(
    tags=TAG_OPERATIONS,
    summary="Pause an operation",
    description="A pending operation is paused at once; a running one stops at its next "
    "chunk boundary (`pause_requested` until then) and releases its worker: its pending "
    "items stay pending and time paused does not count toward the timeout. Events: "
    "`bulk_operation_paused`. 409 when finished, already paused, being cancelled, or "
    "an all-or-nothing (atomic) operation already running.",
    request=s.NoBodySerializer,
    parameters=[OPERATION_ID],
    responses={
        202: OpenApiResponse(s.OperationSerializer, description="Paused, or pausing."),
        **errors(400, 403, 404, 409, 415),
    },
)

OPERATION_RESUME = extend_schema(
    tags=TAG_OPERATIONS,
    summary="Resume a paused operation",
    description="The operation becomes `pending` and is queued again; a worker runs only "
    "its pending items. Events: `bulk_operation_resumed`. 409 unless it is paused.",
    request=s.NoBodySerializer,
    parameters=[OPERATION_ID],
    responses={
        202: OpenApiResponse(s.OperationSerializer, description="Resumed (pending)."),
        **errors(400, 403, 404, 409, 415),
    },
)

OPERATION_RETRY = extend_schema(
    tags=TAG_OPERATIONS,
    summary="Retry the failed items of a finished operation",
    description="Starts a new operation over the failed items (except `not_found` ones). "
    "409 while the operation runs or when nothing failed. Rate-limited (`retry`).",
    request=s.NoBodySerializer,
    parameters=[OPERATION_ID, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RETRY_AFTER],
    responses={
        202: OpenApiResponse(s.OperationAcceptedSerializer, description="The new operation."),
        **errors(400, 403, 404, 409, 415, 422, 429),
    },
)

OPERATION_UNDO = extend_schema(
    tags=TAG_OPERATIONS,
    summary="Undo a finished operation",
    description="Starts a new `undo` operation (`params.undoes` = this id) over the items "
    "that succeeded: soft delete → restored; close → each session's previous status; "
    "archive → content decompressed back, previous status. A session changed since fails "
    "(`changed_since`, `processing`, `deleted`) and is not touched. 409 (nothing created) "
    "for hard delete, a delete with `cascade_exports` (the exports are gone), export, "
    "restore, an undo, an operation not finished, nothing "
    "succeeded, already undone, or past `BULKOPS_UNDO_WINDOW_SECONDS` after it finished. "
    "Rate-limited (`undo`).",
    request=s.NoBodySerializer,
    parameters=[OPERATION_ID, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RETRY_AFTER],
    responses={
        202: OpenApiResponse(s.OperationAcceptedSerializer, description="The undo operation."),
        **errors(400, 403, 404, 409, 415, 422, 429),
    },
)


# --- sessions -----------------------------------------------------------------------------------
#: An empty value means "not filtered" (as django-filter treats it), and says so.
EMPTY = {"type": "string", "maxLength": 0}
SEARCH_PARAMS = [
    OpenApiParameter(
        "created_after",
        {"anyOf": [{"type": "string", "format": "date-time"}, EMPTY]},
        description="Created at or after (ISO 8601 date-time).",
    ),
    OpenApiParameter(
        "created_before",
        {"anyOf": [{"type": "string", "format": "date-time"}, EMPTY]},
        description="Created before (ISO 8601 date-time).",
    ),
    OpenApiParameter(
        "deleted",
        {"type": "string", "enum": ["true", "false", ""]},
        description="`true`: only soft-deleted sessions; `false` or absent: only live ones.",
    ),
    OpenApiParameter(
        "search",
        {"type": "string", "pattern": s.TEXT_PATTERN, "maxLength": MAX_SEARCH_LENGTH},
        description="Text in the title or id (case-insensitive).",
    ),
    OpenApiParameter(
        "owner",
        {"type": "string", "pattern": s.TEXT_PATTERN, "maxLength": 150},
        description="User id or username; only widens anything for staff.",
    ),
]


SESSION_LIST = extend_schema_view(
    get=extend_schema(
        tags=TAG_SESSIONS,
        summary="The caller's sessions (staff with view permission: everyone's)",
        parameters=SEARCH_PARAMS,
        responses={200: s.SessionSerializer(many=True), **errors(400, 403, 404)},
    )
)

SESSION_DETAIL = extend_schema_view(
    get=extend_schema(
        tags=TAG_SESSIONS,
        summary="One session",
        parameters=[
            OpenApiParameter(
                "session_id",
                OpenApiTypes.STR,
                location=OpenApiParameter.PATH,
                pattern=s.SESSION_ID_PATTERN,
            )
        ],
        responses={200: s.SessionDetailSerializer, **errors(403, 404)},
    )
)


# --- files --------------------------------------------------------------------------------------
DOWNLOAD = extend_schema(
    tags=TAG_OPERATIONS,
    summary="Download an export file",
    description="Owner (or staff allowed to view sessions) only; anything else is 404. "
    "409 while the export is still being written, 410 once it has expired.",
    parameters=[
        OpenApiParameter(
            "filename",
            OpenApiTypes.STR,
            location=OpenApiParameter.PATH,
            pattern=r"^session_export_[0-9]{8}_op-[0-9a-f]{32}\.(csv|json)$",
        )
    ],
    responses={
        (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="The CSV file."),
        (200, "application/json"): OpenApiResponse(
            OpenApiTypes.BINARY, description="The JSON file."
        ),
        **errors(403, 404, 409, 410),
    },
)

OPERATION_REPORT = extend_schema(
    tags=TAG_OPERATIONS,
    summary="The completion report: every item of an operation",
    description="Streams every item (`session_id, outcome, reason, message`) as CSV (a "
    "header row, formula-injection safe) or JSON, as an attachment named "
    "`report_<operation id>.<format>`; `outcome` keeps one outcome. Same owner rules as "
    "the operation (anyone else's: 404).",
    parameters=[
        OPERATION_ID,
        OpenApiParameter(
            "format",
            OpenApiTypes.STR,
            enum=list(REPORT_FORMATS),
            default="csv",
            description="`csv` (default) or `json`.",
        ),
        outcome_param(),
    ],
    responses={
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.BINARY, description="session_id,outcome,reason,message rows."
        ),
        (200, "application/json"): OpenApiResponse(
            s.OperationReportSerializer, description="The operation and all its items."
        ),
        **errors(400, 403, 404),
    },
)
