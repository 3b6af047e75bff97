"""The strict fields of the bulk API's inputs, and the enums its outputs name.

JSON types are not coerced (``"true"`` is not a boolean, ``5`` is not an id) and text
is never trimmed, so what the OpenAPI schema promises is exactly what the server
accepts. The values of selection filters are checked by the engine's rule for each key
(``engine.inputs``); these fields only carry them and give their OpenAPI type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from bulkops.conf import bulkops_settings
from bulkops.engine import session_ids_problem
from bulkops.engine.inputs import (
    BooleanKey,
    FilterKey,
    InputRule,
    MomentKey,
    OwnerKey,
    StatusesKey,
    TextKey,
)
from bulkops.models import SESSION_ID_REGEX, OperationStatus, SessionStatus

#: The session id format (``models.SESSION_ID_REGEX``) as an OpenAPI pattern.
SESSION_ID_PATTERN = f"^{SESSION_ID_REGEX}$"
#: Free text may hold anything but NUL (PostgreSQL text cannot store it).
TEXT_PATTERN = "^[^\\u0000]*$"
NONEMPTY_TEXT_PATTERN = "^[^\\u0000]+$"


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
    """1…``BULKOPS_MAX_SESSIONS_PER_OPERATION`` distinct id strings, checked
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


class QueryChoiceField(serializers.ChoiceField):
    """An enum query parameter: an empty value (``?format=``) is a value outside the
    enum (400), not an absent parameter as DRF reads it for an optional field — the
    schema's enum has no empty string."""

    def get_value(self, dictionary: Mapping[str, Any]) -> Any:
        return dictionary.get(self.field_name, serializers.empty)
