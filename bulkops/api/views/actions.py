"""Validate and the actions: ``POST /api/bulk/sessions/validate`` previews a selection,
one ``POST /api/bulk/sessions/<action>`` per selectable action starts it, and
``/api/bulk/sessions/info`` tells the caller's limits."""

from __future__ import annotations

from typing import ClassVar

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bulkops import selectors
from bulkops.actions.base import BulkAction
from bulkops.api import serializers as s
from bulkops.api.views import schema
from bulkops.api.views.base import JSONBodyView, accepted, idempotency_key, selection_of
from bulkops.conf import bulkops_settings
from bulkops.engine import operation_create, operation_validate, request_fingerprint
from bulkops.models import OperationSource
from bulkops.ratelimits import VALIDATE, rate_limit, rate_limit_status


@schema.VALIDATE
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


def action_view(action: type[BulkAction]) -> type[ActionView]:
    """``POST /api/bulk/sessions/<action path>``, generated from the action's module."""
    serializer = s.input_serializer_for(action)
    view = type(
        f"{action.__name__.removesuffix('Action')}View",
        (ActionView,),
        {"action_type": action.action_type, "input_serializer": serializer},
    )
    return schema.action_schema(action, serializer)(view)


@schema.INFO
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
