"""The sessions the caller may see: ``/api/sessions/`` (filtered with the engine's one
``SessionFilterSet``) and ``/api/sessions/<id>/``."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from rest_framework import generics

from bulkops import selectors
from bulkops.api import serializers as s
from bulkops.api.pagination import SessionPagination
from bulkops.api.views import schema
from bulkops.engine import SessionFilterSet
from bulkops.models import Session


@schema.SESSION_LIST
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


@schema.SESSION_DETAIL
class SessionDetailView(generics.RetrieveAPIView):
    serializer_class = s.SessionDetailSerializer
    filter_backends: list = []

    def get_object(self):
        return get_object_or_404(
            selectors.sessions_for_user(user=self.request.user), pk=self.kwargs["session_id"]
        )
