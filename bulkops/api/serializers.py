"""Input and output serializers of the bulk API (DESIGN.md §5).

Inputs are strict on purpose: JSON types are not coerced (``"true"`` is not a boolean,
``5`` is not an id), whitespace is not trimmed, and unknown fields are refused with a
400 naming them — so an ``owner`` or ``status`` smuggled into a body can never be
applied, and what the OpenAPI schema promises is exactly what the server accepts.
Business rules (eligibility, caps of filter selections, permissions) stay in
``bulkops.services``; outputs shape what selectors return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers

from bulkops.actions import registered_actions, selectable_actions
from bulkops.actions.base import BulkAction, Param
from bulkops.conf import bulkops_settings
from bulkops.engine import FILTER_KEYS, MAX_FAILURES, session_ids_problem
from bulkops.engine.inputs import (  # the limits: re-exported for api.schema and api.views
    MAX_OWNER_ID,  # noqa: F401
    MAX_SEARCH_LENGTH,  # noqa: F401
    USERNAME_REGEX,  # noqa: F401
    BooleanKey,
    FilterKey,
    InputRule,
    MomentKey,
    OwnerKey,
    StatusesKey,
    TextKey,
)
from bulkops.models import (
    MAX_REASON_LENGTH,
    SESSION_ID_REGEX,
    ExportFormat,
    ItemOutcome,
    OperationStatus,
    Session,
    SessionStatus,
)

#: The session id format (DESIGN §3) as an OpenAPI pattern.
SESSION_ID_PATTERN = f"^{SESSION_ID_REGEX}$"
#: Free text may hold anything but NUL (PostgreSQL text cannot store it).
TEXT_PATTERN = "^[^\\u0000]*$"
NONEMPTY_TEXT_PATTERN = "^[^\\u0000]+$"
#: Every action an operation may have (outputs): the OpenAPI schema names them ActionEnum
#: (SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]). Those started on a selection of sessions
#: (``session_actions``) are validate's, one schema branch each (api.schema).
ACTIONS = tuple(registered_actions())
#: Far above what validate issues (~200 characters): a bound, not a format.
MAX_SELECTION_TOKEN_LENGTH = 1000


def session_actions() -> tuple[str, ...]:
    return tuple(selectable_actions())


# --- strict fields ----------------------------------------------------------------------
class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false`` only: no ``"true"``, ``1`` or ``"yes"``."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid")


class StrictCharField(serializers.CharField):
    """A JSON string only (DRF's CharField turns numbers into text); never trimmed."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    """One of the choices, as a JSON string."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or data not in self.choices:
            self.fail(
                "invalid_choice", input=data if isinstance(data, str) else type(data).__name__
            )
        return data


class SessionStatusField(serializers.ChoiceField):
    """A session's status (its own OpenAPI enum, ``SessionStatus``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=SessionStatus.values, **kwargs)


class OperationStatusField(serializers.ChoiceField):
    """An operation's status (its own OpenAPI enum, ``OperationStatus``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=OperationStatus.values, **kwargs)


class SessionIdListField(serializers.Field):
    """1…``BULKOPS_MAX_SESSIONS_PER_OPERATION`` distinct id strings (DESIGN §5), checked
    by the engine's one id validator."""

    @staticmethod
    def cap() -> int:
        return bulkops_settings.MAX_SESSIONS_PER_OPERATION

    def to_internal_value(self, data: Any) -> list[str]:
        problem = session_ids_problem(data, cap=self.cap())
        if problem:
            raise serializers.ValidationError(problem, code="invalid")
        return list(data)

    def to_representation(self, value: list[str]) -> list[str]:
        return value


class RuleField:
    """Mixin: the value is checked by the engine's rule for this input (``rule.problem``,
    ``engine.inputs``) and handed on as it is; the DRF field it is mixed into gives the
    OpenAPI type (``api.schema`` maps the custom ones)."""

    def __init__(self, *, rule: InputRule, **kwargs: Any) -> None:
        self.rule = rule
        kwargs.setdefault("help_text", rule.help)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        problem = self.rule.problem(data)
        if problem:
            raise serializers.ValidationError(problem, code="invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class StatusSelectionField(RuleField, serializers.Field):
    """A session status, or a non-empty list of them."""


class OwnerField(RuleField, serializers.Field):
    """A user id (integer) or a username (string)."""


class MomentField(RuleField, StrictCharField):
    """An ISO 8601 date or date-time (the engine's ``parse_moment``), handed on as text."""


class FilterTextField(RuleField, StrictCharField):
    """Text of at most the rule's length."""

    def __init__(self, *, rule: TextKey, **kwargs: Any) -> None:
        super().__init__(rule=rule, max_length=rule.max_length, allow_blank=True, **kwargs)


class FilterBooleanField(RuleField, serializers.BooleanField):
    """``true`` or ``false`` only."""


class RuleIntegerField(RuleField, serializers.IntegerField):
    """An integer within the rule's bounds (they are the schema's too)."""

    def __init__(self, *, rule: Any, **kwargs: Any) -> None:
        super().__init__(rule=rule, min_value=rule.minimum, max_value=rule.maximum, **kwargs)


#: The field of each kind of filter key.
FILTER_FIELDS: dict[type[FilterKey], type[serializers.Field]] = {
    StatusesKey: StatusSelectionField,
    TextKey: FilterTextField,
    MomentKey: MomentField,
    OwnerKey: OwnerField,
    BooleanKey: FilterBooleanField,
}


def text_field(*, max_length: int, **kwargs: Any) -> StrictCharField:
    # DRF's CharField already refuses NUL; the pattern tells OpenAPI clients so.
    return StrictCharField(max_length=max_length, allow_blank=True, **kwargs)


# --- strict input base -------------------------------------------------------------------
class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not declare (400 naming them) instead of dropping them."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                allowed = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {key: [f"Unknown field; allowed here: {allowed}."] for key in unknown}
                )
        return super().to_internal_value(data)


class NoBodySerializer(StrictInputSerializer):
    """Cancel, pause, resume, retry and undo take no parameters: no body, or an empty
    JSON object. Anything else is a 400 rather than ignored (a client must not believe
    ``session_ids`` narrowed its retry)."""


class SelectionFilterSerializer(StrictInputSerializer):
    """ "Select all that match" (DESIGN §5); without ``deleted``, live sessions match
    (soft-deleted ones for restore)."""

    # One optional field per key of the engine's FILTER_KEYS, checked by its rule.
    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            key: FILTER_FIELDS[type(rule)](rule=rule, required=False)
            for key, rule in FILTER_KEYS.items()
        }


class SelectionInputSerializer(StrictInputSerializer):
    """Exactly one of ``session_ids`` or ``filter``, plus the audit ``reason``."""

    session_ids = SessionIdListField(required=False)
    filter = SelectionFilterSerializer(required=False)
    reason = text_field(
        max_length=MAX_REASON_LENGTH, required=False, help_text="Free text stored for audit."
    )

    #: Fields that are action parameters (passed to the service as ``params``).
    param_fields: tuple[str, ...] = ()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("session_ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of 'session_ids' or 'filter'."]}
            )
        return attrs

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.validated_data.items() if k in self.param_fields}


class ActionInputSerializer(SelectionInputSerializer):
    """An action's body: the selection, the audit reason, the failure threshold every
    action takes, and the action's own parameters."""

    max_failures = RuleIntegerField(rule=MAX_FAILURES, required=False)


def param_field(param: Param, *, required: bool, help_text: str = "") -> serializers.Field:
    """The strict DRF field of one action parameter."""
    kwargs: dict[str, Any] = {"help_text": help_text or param.label}
    if not required:
        kwargs["required"] = False
    else:
        kwargs["default"] = param.default
    if param.is_bool:
        return StrictBooleanField(**kwargs)
    return StrictChoiceField(choices=param.choices, **kwargs)


def selection_token_field() -> StrictCharField:
    return StrictCharField(
        max_length=MAX_SELECTION_TOKEN_LENGTH,
        required=False,
        help_text="The `selection_token` validate answered: start only if the selection "
        "still resolves to the same sessions in the same partition (else 409).",
    )


def input_serializer_for(action: type[BulkAction]) -> type[ActionInputSerializer]:
    """The body of ``POST /api/bulk/sessions/<action>``, generated from its
    ``params_spec`` (named ``<Action>InputSerializer`` for the OpenAPI schema)."""
    fields = {name: param_field(param, required=True) for name, param in action.params_spec.items()}
    name = f"{action.__name__.removesuffix('Action')}InputSerializer"
    attrs = {
        **fields,
        "selection_token": selection_token_field(),
        "param_fields": tuple(fields),
        "__module__": __name__,
    }
    return type(name, (ActionInputSerializer,), attrs)


def validate_param_fields() -> dict[str, serializers.Field]:
    """Every registered action's parameters, each optional (``ValidateInputSerializer``
    refuses those the action at hand does not take), with the actions that take it as
    help."""
    params: dict[str, tuple[Param, list[str]]] = {}
    for action_type, action in selectable_actions().items():
        for name, param in action.params_spec.items():
            params.setdefault(name, (param, []))[1].append(action_type)
    return {
        name: param_field(param, required=False, help_text=f"{', '.join(used)} only")
        for name, (param, used) in params.items()
    }


class ValidateInputSerializer(SelectionInputSerializer):
    """The body of validate: a selection, the action, and any action's parameters —
    read from the registry when the serializer is built, so a new action is in it."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["action"] = StrictChoiceField(choices=session_actions())
        fields.update(validate_param_fields())
        return fields

    @property
    def param_fields(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(validate_param_fields())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Refuse a parameter the chosen action does not take (400 naming it), as the
        action's own endpoint does: a preview must not validate what would not run."""
        attrs = super().validate(attrs)
        action = attrs["action"]
        takes = selectable_actions()[action].params_spec
        foreign = sorted(name for name in self.param_fields if name in attrs and name not in takes)
        if foreign:
            allowed = ", ".join(takes) or "no parameters"
            raise serializers.ValidationError(
                {
                    name: [f"Not a parameter of {action}; {action} takes {allowed}."]
                    for name in foreign
                }
            )
        return attrs


# --- outputs -----------------------------------------------------------------------------
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


class OperationErrorSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    reason = serializers.CharField()
    message = serializers.CharField()


class OperationSerializer(serializers.Serializer):
    """The operation representation (DESIGN §5), as ``selectors.operation_representation``
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


class QueryChoiceField(serializers.ChoiceField):
    """An enum query parameter: an empty value (``?format=``) is a value outside the
    enum (400), not an absent parameter as DRF reads it for an optional field — the
    schema's enum has no empty string."""

    def get_value(self, dictionary: Mapping[str, Any]) -> Any:
        return dictionary.get(self.field_name, serializers.empty)


class ItemsQuerySerializer(serializers.Serializer):
    """Query parameters of the items list (pagination parameters are the paginator's)."""

    outcome = QueryChoiceField(choices=ItemOutcome.values, required=False)


class ReportQuerySerializer(serializers.Serializer):
    """Query parameters of the completion report."""

    format = QueryChoiceField(choices=("csv", "json"), default="csv")
    outcome = QueryChoiceField(choices=ItemOutcome.values, required=False)


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
