"""What the bulk API answers: the shapes of what the engine, the selectors and
``bulkops.representations`` return, for the responses and the OpenAPI schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from rest_framework import serializers

from bulkops.actions import registered_actions
from bulkops.api.serializers.fields import OperationStatusField, SessionStatusField
from bulkops.models import ExportFormat, ItemOutcome, Session

if TYPE_CHECKING:
    from bulkops.actions.base import BulkAction

#: Every action an operation may have (outputs): the OpenAPI schema names them ActionEnum
#: (SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]). Those started on a selection of sessions
#: (``session_actions``) are validate's, one schema branch each (api.schema).
ACTIONS = tuple(registered_actions())


class EligibleSessionSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    title = serializers.CharField()
    status = SessionStatusField()


class IneligibleSessionSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    reason = serializers.CharField()
    message = serializers.CharField()


class SkippedSessionSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    reason = serializers.CharField()


class CascadeSerializer(serializers.Serializer):
    exports = serializers.IntegerField(help_text="Exports that would be removed with them.")


#: What the OpenAPI schema says of validate's lists past the cap.
TRUNCATED = (
    " Past the action's cap (a large selection, `lists_truncated` true) this is not "
    "the full list but at most 20 sample sessions per reason (per part for the eligible), "
    "first in id order; the counts are exact."
)


class ValidateOutputSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=ACTIONS)
    eligible_count = serializers.IntegerField()
    ineligible_count = serializers.IntegerField()
    skipped_count = serializers.IntegerField()
    counts_by_reason = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="The skipped and ineligible sessions by reason code, e.g. "
        '`{"already_closed": 12, "processing": 3}`.',
    )
    lists_truncated = serializers.BooleanField(
        help_text="True past the action's cap (`BULKOPS_MAX_SESSIONS_PER_OPERATION`, export "
        "`BULKOPS_MAX_EXPORT_SESSIONS`), for a user with `bulkops.run_large_operation`: "
        "`eligible`, `eligible_ids`, `ineligible` and `skipped` then hold samples, never "
        "the full lists; the counts are exact."
    )
    eligible = EligibleSessionSerializer(many=True, help_text="Every eligible session." + TRUNCATED)
    eligible_ids = serializers.ListField(
        child=serializers.CharField(), help_text="The ids of `eligible`." + TRUNCATED
    )
    ineligible = IneligibleSessionSerializer(
        many=True, help_text="Every ineligible session, with its reason." + TRUNCATED
    )
    skipped = SkippedSessionSerializer(
        many=True, help_text="Every session already in the target state." + TRUNCATED
    )
    estimated_duration_seconds = serializers.FloatField()
    selection_token = serializers.CharField(
        help_text="Signed, valid `BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS` (1 h): pass it "
        "to the action so it runs only on exactly this partition."
    )
    cascade = CascadeSerializer(required=False, help_text="delete only")


class OperationAcceptedSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    operation_id = serializers.CharField()
    action = serializers.ChoiceField(choices=ACTIONS)
    status = OperationStatusField()
    total = serializers.IntegerField()
    status_url = serializers.CharField()
    estimated_duration_seconds = serializers.FloatField()


class ExportMetadataSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=ExportFormat.values)
    expires_at = serializers.DateTimeField()


class ExportAcceptedSerializer(OperationAcceptedSerializer):
    download_url = serializers.CharField()
    metadata = ExportMetadataSerializer()


def accepted_serializer_for(action: type[BulkAction]) -> type[OperationAcceptedSerializer]:
    """The 202 answer that started an operation of ``action`` (with its download when
    the action writes a file)."""
    return ExportAcceptedSerializer if action.produces_file else OperationAcceptedSerializer


class OperationErrorSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    reason = serializers.CharField()
    message = serializers.CharField()


class OperationSerializer(serializers.Serializer):
    """The operation representation, as ``representations.operation_representation``
    builds it; exports add ``download_url`` and ``expires_at``."""

    operation_id = serializers.CharField()
    action = serializers.ChoiceField(choices=ACTIONS)
    status = OperationStatusField()
    progress = serializers.IntegerField(min_value=0, max_value=100)
    total = serializers.IntegerField()
    processed = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    skipped = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    errors = OperationErrorSerializer(
        many=True, help_text="Failed items (the first 100; all of them via items)."
    )
    error = serializers.CharField(allow_blank=True, help_text="Why a failed operation failed.")
    source = serializers.CharField()
    params = serializers.DictField()
    reason = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(
        allow_null=True, help_text="Time spent running (time paused left out)."
    )
    eta_seconds = serializers.FloatField(
        allow_null=True, help_text="None before the first chunk and while paused."
    )
    pause_requested = serializers.BooleanField(
        help_text="A pause was asked for; the worker stops at its next chunk boundary."
    )
    paused_at = serializers.DateTimeField(allow_null=True, help_text="When it paused.")
    version = serializers.IntegerField()
    status_url = serializers.CharField()
    download_url = serializers.CharField(required=False, help_text="export only")
    expires_at = serializers.DateTimeField(required=False, help_text="export only")


class OperationItemSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    outcome = serializers.ChoiceField(choices=ItemOutcome.values)
    reason = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)


class OperationItemPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = OperationItemSerializer(many=True)


class OperationDetailSerializer(OperationSerializer):
    items = OperationItemPageSerializer(help_text="Paginated like the items endpoint.")


class OperationReportSerializer(serializers.Serializer):
    """The completion report as JSON (streamed; this is its shape)."""

    operation_id = serializers.CharField()
    action = serializers.ChoiceField(choices=ACTIONS)
    status = OperationStatusField()
    items = OperationItemSerializer(many=True)


class RateLimitStatusSerializer(serializers.Serializer):
    rate = serializers.CharField()
    limit = serializers.IntegerField()
    used = serializers.IntegerField()
    remaining = serializers.IntegerField()
    reset_seconds = serializers.IntegerField()


class LimitsSerializer(serializers.Serializer):
    max_sessions_per_operation = serializers.IntegerField()
    max_export_sessions = serializers.IntegerField()
    max_active_operations_per_user = serializers.IntegerField()
    max_request_bytes = serializers.IntegerField()
    chunk_size = serializers.IntegerField()
    operation_timeout_seconds = serializers.IntegerField()
    export_retention_seconds = serializers.IntegerField()
    idempotency_ttl_seconds = serializers.IntegerField()
    undo_window_seconds = serializers.IntegerField(
        help_text="How long after it finished an operation may be undone."
    )


class SessionCountsSerializer(serializers.Serializer):
    active = serializers.IntegerField()
    processing = serializers.IntegerField()
    closed = serializers.IntegerField()
    archived = serializers.IntegerField()
    deleted = serializers.IntegerField()
    total = serializers.IntegerField()


class InfoOutputSerializer(serializers.Serializer):
    limits = LimitsSerializer()
    rate_limits = serializers.DictField(
        child=RateLimitStatusSerializer(), help_text="Per kind: delete, export, close, …"
    )
    active_operations = serializers.IntegerField()
    sessions = SessionCountsSerializer(help_text="The caller's own sessions.")


class SessionSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field=get_user_model().USERNAME_FIELD, read_only=True)
    owner_id = serializers.IntegerField(read_only=True)
    is_deleted = serializers.BooleanField(read_only=True)
    status = SessionStatusField(read_only=True)

    class Meta:
        model = Session
        fields = [
            "id",
            "title",
            "status",
            "owner",
            "owner_id",
            "metadata",
            "created_at",
            "updated_at",
            "closed_at",
            "archived_at",
            "deleted_at",
            "is_deleted",
        ]
        read_only_fields = fields


class SessionDetailSerializer(SessionSerializer):
    class Meta(SessionSerializer.Meta):
        fields = [
            *SessionSerializer.Meta.fields,
            "content",
            "archive_original_size",
            "archive_compressed_size",
        ]
        read_only_fields = fields


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(required=False)


class RateLimitedSerializer(ErrorSerializer):
    retry_after = serializers.IntegerField(help_text="Seconds; also the Retry-After header.")


class SelectionCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    eligible_count = serializers.IntegerField()
    skipped_count = serializers.IntegerField()
    ineligible_count = serializers.IntegerField()


class SelectionConflictSerializer(ErrorSerializer):
    """409 of an action given a ``selection_token``: ``code`` is ``selection_drift``
    (with the counts) or ``selection_token_expired``."""

    previous_count = serializers.IntegerField(
        required=False, help_text="Sessions selected when validated (drift only)."
    )
    current_count = serializers.IntegerField(
        required=False, help_text="Sessions the selection resolves to now (drift only)."
    )
    previous = SelectionCountsSerializer(required=False, help_text="The partition then.")
    current = SelectionCountsSerializer(required=False, help_text="The partition now.")


class TooLargeSerializer(ErrorSerializer):
    max_bytes = serializers.IntegerField()
