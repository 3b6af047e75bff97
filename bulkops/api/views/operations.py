"""The caller's operations: list, detail, items and status, and what may be asked of
one — cancel, pause and resume (``OperationCommandView``), retry and undo (each starts
a new operation: ``OperationFollowUpView``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bulkops import selectors
from bulkops.api import serializers as s
from bulkops.api.pagination import Pagination
from bulkops.api.views import schema
from bulkops.api.views.base import JSONBodyView, accepted, idempotency_key, no_body
from bulkops.engine import (
    Started,
    operation_cancel,
    operation_pause,
    operation_resume,
    operation_retry,
    operation_undo,
)
from bulkops.models import BulkOperation, OperationSource
from bulkops.ratelimits import RETRY, UNDO
from bulkops.representations import operation_representation


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


@schema.OPERATION_LIST
class OperationListView(generics.GenericAPIView):
    pagination_class = Pagination
    filter_backends: list = []

    def get_queryset(self):
        return selectors.operations_for_user(user=self.request.user)

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        data = [operation_representation(op, errors=False) for op in page]
        return self.get_paginated_response(s.OperationSerializer(data, many=True).data)


@schema.OPERATION_DETAIL
class OperationDetailView(APIView):
    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        data = operation_representation(operation)
        data["items"] = items_page(request, self, operation)
        return Response(s.OperationDetailSerializer(data).data)


@schema.OPERATION_ITEMS
class OperationItemsView(generics.GenericAPIView):
    pagination_class = Pagination
    filter_backends: list = []

    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        return Response(items_page(request, self, operation))


@schema.OPERATION_STATUS
class OperationStatusView(APIView):
    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        return Response(s.OperationSerializer(operation_representation(operation)).data)


class OperationCommandView(JSONBodyView):
    """``POST`` with no body: call ``service`` (an engine service taking the operation)
    on the caller's operation; 202 with its representation and ``Location`` = its
    status URL (404 for someone else's, 409 from the service)."""

    service: ClassVar[Callable[..., BulkOperation]]

    def post(self, request: Request, operation_id: str) -> Response:
        no_body(request)
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        data = operation_representation(self.service(operation=operation))
        return Response(
            s.OperationSerializer(data).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": data["status_url"]},
        )


@schema.OPERATION_CANCEL
class OperationCancelView(OperationCommandView):
    service = staticmethod(operation_cancel)


@schema.OPERATION_PAUSE
class OperationPauseView(OperationCommandView):
    service = staticmethod(operation_pause)


@schema.OPERATION_RESUME
class OperationResumeView(OperationCommandView):
    service = staticmethod(operation_resume)


class OperationFollowUpView(JSONBodyView):
    """``POST`` with no body: start a new operation from the caller's operation with
    ``service`` (an engine starter), counted against ``rate_scope``; 202 as an action
    answers, ``Idempotency-Key`` included."""

    service: ClassVar[Callable[..., Started]]
    rate_scope: ClassVar[str]

    def post(self, request: Request, operation_id: str) -> Response:
        no_body(request)
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        key = idempotency_key(request)
        started = self.service(
            operation=operation,
            user=request.user,
            source=OperationSource.API,
            idempotency_key=key,
            rate_scope=self.rate_scope,
        )
        return accepted(started, key=key)


@schema.OPERATION_RETRY
class OperationRetryView(OperationFollowUpView):
    service = staticmethod(operation_retry)
    rate_scope = RETRY


@schema.OPERATION_UNDO
class OperationUndoView(OperationFollowUpView):
    service = staticmethod(operation_undo)
    rate_scope = UNDO
