"""The bodies and query parameters the bulk API accepts.

Unknown fields are refused with a 400 naming them, so an ``owner`` or ``status``
smuggled into a body can never be applied. An action's body is generated from its
``params_spec``, and validate's from every selectable action's, so a new action needs
no serializer of its own. Business rules (eligibility, caps of filter selections,
permissions) stay in the engine (``bulkops.engine``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from bulkops.actions import selectable_actions
from bulkops.actions.base import BulkAction, Param
from bulkops.api.serializers.fields import (
    FILTER_FIELDS,
    QueryChoiceField,
    RuleIntegerField,
    SessionIdListField,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    text_field,
)
from bulkops.engine import FILTER_KEYS, MAX_FAILURES
from bulkops.models import MAX_REASON_LENGTH, ItemOutcome

#: Far above what validate issues (~200 characters): a bound, not a format.
MAX_SELECTION_TOKEN_LENGTH = 1000


def session_actions() -> tuple[str, ...]:
    return tuple(selectable_actions())


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
    """ "Select all that match": without ``deleted``, live sessions match
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


class ItemsQuerySerializer(serializers.Serializer):
    """Query parameters of the items list (pagination parameters are the paginator's)."""

    outcome = QueryChoiceField(choices=ItemOutcome.values, required=False)


class ReportQuerySerializer(serializers.Serializer):
    """Query parameters of the completion report."""

    format = QueryChoiceField(choices=("csv", "json"), default="csv")
    outcome = QueryChoiceField(choices=ItemOutcome.values, required=False)
