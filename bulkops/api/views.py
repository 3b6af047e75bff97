"""The bulk API (DESIGN.md §5): thin views — parse input, call one service or selector,
shape the output. Errors are raised as the services raise them and turned into
responses by ``bulkops.api.exceptions``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bulkops import selectors
from bulkops.actions import get_action
from bulkops.actions.base import BulkAction
from bulkops.actions.export import export_path, file_state
from bulkops.api import schema as api_schema  # noqa: F401  (registers the extensions)
from bulkops.api import serializers as s
from bulkops.api.exceptions import Gone
from bulkops.api.pagination import Pagination, SessionPagination
from bulkops.api.parsers import JSONParser
from bulkops.api.schema import (
    IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
    PAGE_PARAMS,
    REPLAYED_HEADER,
    RETRY_AFTER,
    BulkAutoSchema,
    errors,
)
from bulkops.conf import bulkops_settings
from bulkops.engine import (
    REPORT_FORMATS,
    Selection,
    SessionFilterSet,
    Started,
    operation_cancel,
    operation_create,
    operation_pause,
    operation_report,
    operation_resume,
    operation_retry,
    operation_undo,
    operation_validate,
    report_filename,
    request_fingerprint,
)
from bulkops.exceptions import OperationConflict
from bulkops.models import BulkOperation, OperationSource, Session
from bulkops.ratelimits import RETRY, UNDO, VALIDATE, rate_limit, rate_limit_status
from bulkops.representations import operation_accepted, operation_representation, status_url

IDEMPOTENCY_KEY_RE = re.compile(r"[!-~]{1,255}")
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
    """202 with ``Location`` = the status URL and the body DESIGN §5 gives; with an
    Idempotency-Key, ``Idempotent-Replayed: true`` when an earlier request with that key
    started the operation, ``false`` when this one did."""
    operation = started.operation
    data = operation_accepted(operation)
    out = accepted_serializer(get_action(operation.action))
    headers = {"Location": data["status_url"]}
    if key is not None:
        headers[REPLAYED_HEADER] = "true" if started.replayed else "false"
    return Response(out(data).data, status=status.HTTP_202_ACCEPTED, headers=headers)


def accepted_serializer(action: type[BulkAction]) -> type[s.OperationAcceptedSerializer]:
    return s.ExportAcceptedSerializer if action.produces_file else s.OperationAcceptedSerializer


def selection_of(data: dict[str, Any]) -> Selection:
    flt = data.get("filter")
    return Selection(
        session_ids=data.get("session_ids"), filter=dict(flt) if flt is not None else None
    )


def no_body(request: Request) -> None:
    """400 unless the body is absent or ``{}`` (see ``NoBodySerializer``)."""
    s.NoBodySerializer(data=request.data).is_valid(raise_exception=True)


# --- validate and the five actions ------------------------------------------------------------
class JSONBodyView(APIView):
    """POST bodies are JSON only (anything else: 415)."""

    parser_classes = [JSONParser]
    schema = BulkAutoSchema()


@extend_schema(
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
class ValidateView(JSONBodyView):
    def post(self, request: Request) -> Response:
        serializer = s.ValidateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with rate_limit(user=request.user, scope=VALIDATE):
            result = operation_validate(
                user=request.user,
                action=serializer.validated_data["action"],
                selection=selection_of(serializer.validated_data),
                params=serializer.params,
            )
        return Response(s.ValidateOutputSerializer(result.as_dict()).data)


class ActionView(JSONBodyView):
    """Start ``action_type`` on a selection: 202 + Location, or the operation an
    ``Idempotency-Key`` already started (not counted against the rate limit)."""

    action_type: ClassVar[str]
    input_serializer: ClassVar[type[s.ActionInputSerializer]]

    def post(self, request: Request) -> Response:
        serializer = self.input_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = idempotency_key(request)
        started = operation_create(
            user=request.user,
            action=self.action_type,
            selection=selection_of(data),
            params=serializer.params,
            source=OperationSource.API,
            reason=data.get("reason", ""),
            idempotency_key=key,
            fingerprint=request_fingerprint(action=self.action_type, payload=request.data),
            selection_token=data.get("selection_token"),
            max_failures=data.get("max_failures"),
            rate_scope=self.action_type,
        )
        return accepted(started, key=key)


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
                accepted_serializer(action),
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
        examples=[OpenApiExample(f"{name} by ids", value=action.api_example, request_only=True)],
    )


def action_view(action: type[BulkAction]) -> type[ActionView]:
    """``POST /api/bulk/sessions/<action path>``, generated from the action's module."""
    serializer = s.input_serializer_for(action)
    view = type(
        f"{action.__name__.removesuffix('Action')}View",
        (ActionView,),
        {"action_type": action.action_type, "input_serializer": serializer},
    )
    return action_schema(action, serializer)(view)


# --- operations ------------------------------------------------------------------------------
@extend_schema(
    tags=TAG_OPERATIONS,
    summary="The caller's operations, newest first",
    responses={200: s.OperationSerializer(many=True), **errors(400, 403, 404)},
)
class OperationListView(generics.GenericAPIView):
    pagination_class = Pagination
    filter_backends: list = []

    def get_queryset(self):
        return selectors.operations_for_user(user=self.request.user)

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        data = [operation_representation(op, errors=False) for op in page]
        return self.get_paginated_response(s.OperationSerializer(data, many=True).data)


def outcome_param() -> OpenApiParameter:
    return OpenApiParameter(
        "outcome",
        OpenApiTypes.STR,
        enum=list(s.ItemOutcome.values),
        description="Only items with this outcome.",
    )


def items_page(request: Request, view: APIView, operation: BulkOperation) -> dict[str, Any]:
    """One page of the operation's items (``?outcome=``, ``?page=``, ``?page_size=``)."""
    query = s.ItemsQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    paginator = Pagination()
    items = selectors.operation_items(
        operation=operation, outcome=query.validated_data.get("outcome")
    )
    page = paginator.paginate_queryset(items, request, view=view)
    results = s.OperationItemSerializer(page, many=True).data
    return paginator.get_paginated_response(results).data


@extend_schema(
    tags=TAG_OPERATIONS,
    summary="One operation, with a page of its items",
    parameters=[OPERATION_ID, outcome_param(), *PAGE_PARAMS],
    responses={200: s.OperationDetailSerializer, **errors(400, 403, 404)},
)
class OperationDetailView(APIView):
    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        data = operation_representation(operation)
        data["items"] = items_page(request, self, operation)
        return Response(s.OperationDetailSerializer(data).data)


@extend_schema(
    tags=TAG_OPERATIONS,
    summary="The items of an operation (paginated)",
    parameters=[OPERATION_ID, outcome_param()],
    responses={200: s.OperationItemSerializer(many=True), **errors(400, 403, 404)},
)
class OperationItemsView(generics.GenericAPIView):
    pagination_class = Pagination
    filter_backends: list = []

    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        return Response(items_page(request, self, operation))


@extend_schema(
    tags=TAG_OPERATIONS,
    summary="The status of an operation",
    description="The same representation the WebSocket events carry.",
    parameters=[OPERATION_ID],
    responses={200: s.OperationSerializer, **errors(403, 404)},
)
class OperationStatusView(APIView):
    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        return Response(s.OperationSerializer(operation_representation(operation)).data)


@extend_schema(
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
class OperationCancelView(JSONBodyView):
    service = staticmethod(operation_cancel)

    def post(self, request: Request, operation_id: str) -> Response:
        """Call ``service`` on the caller's operation: 202 with its representation and
        ``Location`` = its status URL (404 for someone else's, 409 from the service)."""
        no_body(request)
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        data = operation_representation(self.service(operation=operation))
        return Response(
            s.OperationSerializer(data).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": data["status_url"]},
        )


@extend_schema(
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
class OperationPauseView(OperationCancelView):
    service = staticmethod(operation_pause)


@extend_schema(
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
class OperationResumeView(OperationCancelView):
    service = staticmethod(operation_resume)


@extend_schema(
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
class OperationRetryView(JSONBodyView):
    def post(self, request: Request, operation_id: str) -> Response:
        no_body(request)
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        key = idempotency_key(request)
        started = operation_retry(
            operation=operation,
            user=request.user,
            source=OperationSource.API,
            idempotency_key=key,
            rate_scope=RETRY,
        )
        return accepted(started, key=key)


@extend_schema(
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
class OperationUndoView(JSONBodyView):
    def post(self, request: Request, operation_id: str) -> Response:
        no_body(request)
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        key = idempotency_key(request)
        started = operation_undo(
            operation=operation,
            user=request.user,
            source=OperationSource.API,
            idempotency_key=key,
            rate_scope=UNDO,
        )
        return accepted(started, key=key)


# --- info, sessions, download -------------------------------------------------------------------
@extend_schema(
    tags=TAG_ACTIONS,
    summary="Limits, the caller's rate limits and session counts",
    responses={200: s.InfoOutputSerializer, **errors(403)},
)
class InfoView(APIView):
    def get(self, request: Request) -> Response:
        data = {
            "limits": {
                "max_sessions_per_operation": bulkops_settings.MAX_SESSIONS_PER_OPERATION,
                "max_export_sessions": bulkops_settings.MAX_EXPORT_SESSIONS,
                "max_active_operations_per_user": bulkops_settings.MAX_ACTIVE_OPERATIONS_PER_USER,
                "max_request_bytes": bulkops_settings.MAX_REQUEST_BYTES,
                "chunk_size": bulkops_settings.CHUNK_SIZE,
                "operation_timeout_seconds": bulkops_settings.OPERATION_TIMEOUT_SECONDS,
                "export_retention_seconds": bulkops_settings.EXPORT_RETENTION_SECONDS,
                "idempotency_ttl_seconds": bulkops_settings.IDEMPOTENCY_TTL_SECONDS,
                "undo_window_seconds": bulkops_settings.UNDO_WINDOW_SECONDS,
            },
            "rate_limits": rate_limit_status(user=request.user),
            "active_operations": selectors.active_operations_count(user=request.user),
            "sessions": selectors.session_counts_by_status(user=request.user),
        }
        return Response(s.InfoOutputSerializer(data).data)


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
        {"type": "string", "pattern": s.TEXT_PATTERN, "maxLength": s.MAX_SEARCH_LENGTH},
        description="Text in the title or id (case-insensitive).",
    ),
    OpenApiParameter(
        "owner",
        {"type": "string", "pattern": s.TEXT_PATTERN, "maxLength": 150},
        description="User id or username; only widens anything for staff.",
    ),
]


@extend_schema_view(
    get=extend_schema(
        tags=TAG_SESSIONS,
        summary="The caller's sessions (staff with view permission: everyone's)",
        parameters=SEARCH_PARAMS,
        responses={200: s.SessionSerializer(many=True), **errors(400, 403, 404)},
    )
)
class SessionListView(generics.ListAPIView):
    # For the schema generator (it has no user); requests use get_queryset.
    queryset = Session.objects.none()
    serializer_class = s.SessionSerializer
    pagination_class = SessionPagination
    filterset_class = SessionFilterSet

    def get_queryset(self):
        return selectors.session_list_for_user(user=self.request.user)

    def paginate_queryset(self, queryset):
        # Everyone's sessions may be millions: their count may be an estimate.
        self.paginator.may_estimate = selectors.sessions_list_is_everyones(user=self.request.user)
        return super().paginate_queryset(queryset)


@extend_schema_view(
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
class SessionDetailView(generics.RetrieveAPIView):
    serializer_class = s.SessionDetailSerializer
    filter_backends: list = []

    def get_object(self):
        return get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )


class IgnoreAcceptNegotiation(BaseContentNegotiation):
    """A download is a file whatever the client accepts; errors are JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


#: By the file name's last extension (a large export's is ``.csv.gz`` / ``.jsonl.gz``).
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "gz": "application/gzip",
}


@extend_schema(
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
class DownloadView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation

    def get(self, request: Request, filename: str) -> FileResponse:
        operation = selectors.export_operation_for_download(user=request.user, filename=filename)
        state = file_state(operation)
        if state == "expired":
            raise Gone("This export has expired; run the export again.")
        if state == "pending":
            raise OperationConflict(
                f"The export is not finished yet ({operation.status}); "
                f"poll {status_url(operation.id)}."
            )
        if state != "ready":
            raise NotFound("This export produced no file.")
        ext = filename.rsplit(".", 1)[1]
        response = FileResponse(
            export_path(operation.export_file).open("rb"),
            as_attachment=True,
            filename=filename,
            content_type=CONTENT_TYPES[ext],
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        return response


@extend_schema(
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
class OperationReportView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAcceptNegotiation

    def get(self, request: Request, operation_id: str) -> StreamingHttpResponse:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        query = s.ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt, outcome = query.validated_data["format"], query.validated_data.get("outcome")
        pieces = operation_report(
            operation=operation,
            fmt=fmt,
            outcome=outcome,
            asynchronous=isinstance(request._request, ASGIRequest),
        )
        response = StreamingHttpResponse(pieces, content_type=CONTENT_TYPES[fmt])
        filename = report_filename(operation, fmt)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        return response
