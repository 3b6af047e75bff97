"""django-filter sets for the session list (what a selection UI needs)."""

from __future__ import annotations

import datetime

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django_filters.fields import IsoDateTimeField

from bulkops.api.serializers import MAX_OWNER_ID, MAX_SEARCH_LENGTH
from bulkops.models import Session, SessionStatus

BOOLEAN_CHOICES = (("true", "true"), ("false", "false"))


class UTCDateTimeField(IsoDateTimeField):
    """ISO 8601 date-time, converted to UTC: PostgreSQL refuses offsets past ±15:59 that
    ISO 8601 (and Python) allow."""

    def to_python(self, value):
        try:
            moment = super().to_python(value)
            return None if moment is None else moment.astimezone(datetime.UTC)
        except OverflowError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class SessionFilter(django_filters.FilterSet):
    """``status`` (repeatable), ``search`` (title or id), ``created_after`` (inclusive),
    ``created_before`` (exclusive), ``owner`` (id or username; only widens anything for
    staff), ``deleted`` (``true``: only soft-deleted, ``false`` or absent: only live),
    ``ordering``."""

    status = django_filters.MultipleChoiceFilter(choices=SessionStatus.choices)
    search = django_filters.CharFilter(
        method="filter_search", max_length=MAX_SEARCH_LENGTH, strip=False
    )
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    owner = django_filters.CharFilter(method="filter_owner", max_length=150)
    deleted = django_filters.ChoiceFilter(choices=BOOLEAN_CHOICES, method="filter_deleted")
    ordering = django_filters.OrderingFilter(
        fields=("created_at", "updated_at", "title", "status", "id")
    )

    class Meta:
        model = Session
        fields: list[str] = []

    def filter_search(self, qs: QuerySet[Session], name: str, value: str) -> QuerySet[Session]:
        return qs.filter(Q(title__icontains=value) | Q(id__icontains=value))

    def filter_owner(self, qs: QuerySet[Session], name: str, value: str) -> QuerySet[Session]:
        if value.isascii() and value.isdigit() and int(value) <= MAX_OWNER_ID:
            return qs.filter(Q(owner_id=int(value)) | Q(owner__username=value))
        return qs.filter(owner__username=value)

    def filter_deleted(self, qs: QuerySet[Session], name: str, value: str) -> QuerySet[Session]:
        return qs  # applied in filter_queryset, which also covers the default

    def filter_queryset(self, queryset: QuerySet[Session]) -> QuerySet[Session]:
        queryset = super().filter_queryset(queryset)
        deleted = self.form.cleaned_data.get("deleted") == "true"
        return queryset.filter(deleted_at__isnull=not deleted)
