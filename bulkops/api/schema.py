"""OpenAPI for the strict inputs: the schema says exactly what the server accepts.

drf-spectacular extensions (registered on import; ``bulkops.api.views.base`` imports this
module) for the custom fields, ``additionalProperties: false`` for every input, and
the selection as ``oneOf`` (``session_ids`` or ``filter``, never both) — for validate, one
branch per action with that action's parameters; plus the error responses every endpoint
documents.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import (
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from bulkops.actions import selectable_actions
from bulkops.api import serializers as s
from bulkops.api.pagination import Pagination
from bulkops.engine.inputs import MAX_OWNER_ID, USERNAME_REGEX
from bulkops.models import SessionStatus

SELECTION_KEYS = ("session_ids", "filter")


class _NamedEnumExtension(OpenApiSerializerFieldExtension):
    """Two different ``status`` enums get names of their own instead of a hash."""

    component: str

    def get_name(self) -> str:
        return self.component

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.target.choices)}


class SessionStatusFieldExtension(_NamedEnumExtension):
    target_class = s.SessionStatusField
    component = "SessionStatus"


class OperationStatusFieldExtension(_NamedEnumExtension):
    target_class = s.OperationStatusField
    component = "OperationStatus"


class SessionIdListFieldExtension(OpenApiSerializerFieldExtension):
    target_class = s.SessionIdListField

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {"type": "string", "pattern": s.SESSION_ID_PATTERN, "maxLength": 64},
            "minItems": 1,
            "maxItems": s.SessionIdListField.cap(),
            "uniqueItems": True,
            "description": "Distinct session ids (duplicates are refused, by name).",
        }


class StatusSelectionFieldExtension(OpenApiSerializerFieldExtension):
    target_class = s.StatusSelectionField

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        status = {"type": "string", "enum": list(SessionStatus.values)}
        return {"oneOf": [status, {"type": "array", "items": status, "minItems": 1}]}


class OwnerFieldExtension(OpenApiSerializerFieldExtension):
    target_class = s.OwnerField

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        return {
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_OWNER_ID},
                {"type": "string", "pattern": f"^{USERNAME_REGEX}$"},
            ]
        }


class MomentFieldExtension(OpenApiSerializerFieldExtension):
    target_class = s.MomentField
    priority = 1

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        return {
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "date"},
            ]
        }


class StrictCharFieldExtension(OpenApiSerializerFieldExtension):
    target_class = s.StrictCharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        field = self.target
        # Non-empty here: for a blank-allowed field drf-spectacular adds the empty string
        # as a ``oneOf`` alternative, which must not match this branch too.
        schema: dict[str, Any] = {"type": "string", "pattern": s.NONEMPTY_TEXT_PATTERN}
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        if not field.allow_blank:
            schema["minLength"] = max(1, field.min_length or 0)
        return schema


class StrictInputExtension(OpenApiSerializerExtension):
    """Unknown fields are refused (400), so the schema closes every input object."""

    target_class = s.StrictInputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        return schema


class SelectionInputExtension(OpenApiSerializerExtension):
    """``oneOf``: the body has ``session_ids`` or ``filter``, and nothing undeclared."""

    target_class = s.SelectionInputSerializer
    match_subclasses = True
    priority = 1

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        properties = schema.pop("properties")
        required = [r for r in schema.pop("required", []) if r not in SELECTION_KEYS]
        common = {k: v for k, v in properties.items() if k not in SELECTION_KEYS}
        branches = [
            {
                "type": "object",
                "title": f"by {key}",
                "properties": {key: properties[key], **common},
                "required": [key, *required],
                "additionalProperties": False,
            }
            for key in SELECTION_KEYS
        ]
        schema.pop("type", None)
        return {**schema, "oneOf": branches}


class ValidateInputExtension(OpenApiSerializerExtension):
    """validate's body: one ``oneOf`` branch per action and selection key, holding
    exactly that action's parameters — any other is refused (400), as the action's own
    endpoint refuses it."""

    target_class = s.ValidateInputSerializer
    priority = 2

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        properties = schema.pop("properties")
        params = set(s.validate_param_fields())
        common = {
            k: v
            for k, v in properties.items()
            if k not in SELECTION_KEYS and k not in params and k != "action"
        }
        branches = [
            {
                "type": "object",
                "title": f"{action_type} by {key}",
                "properties": {
                    key: properties[key],
                    # Wrapped: drf-spectacular's enum post-processing would give every
                    # branch's one-value enum one shared component (the first branch's).
                    "action": {"allOf": [{"type": "string", "enum": [action_type]}]},
                    **common,
                    **{name: properties[name] for name in action.params_spec},
                },
                "required": [key, "action"],
                "additionalProperties": False,
            }
            for action_type, action in selectable_actions().items()
            for key in SELECTION_KEYS
        ]
        schema.pop("type", None)
        schema.pop("required", None)
        return {**schema, "oneOf": branches}


class BulkAutoSchema(AutoSchema):
    """A selection body is required (drf-spectacular infers "required" from top-level
    required properties, which a ``oneOf`` does not have)."""

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        cls = serializer if isinstance(serializer, type) else type(serializer)
        if issubclass(cls, s.SelectionInputSerializer):
            required = True
        return schema, required


# --- responses --------------------------------------------------------------------------
ERROR_DESCRIPTIONS = {
    400: "Bad input (field errors, or `detail`); nothing was changed.",
    401: "Not authenticated.",
    403: "Not authenticated, or CSRF token missing (cookie authentication).",
    404: "Not found (someone else's looks exactly the same).",
    409: "The operation is not in a state that allows this.",
    410: "The export has expired.",
    413: "Request body too large.",
    415: "Only application/json bodies are accepted.",
    422: "Idempotency-Key already used with a different body.",
    429: "Rate limited, or too many active operations; see Retry-After.",
}

RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before trying again.",
)

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    pattern="^[!-~]{1,255}$",
    description="Makes a retried POST return the same operation (per user, kept ≥ 24 h); "
    "the same key with a different body → 422. 1–255 visible ASCII characters.",
)

REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENT_REPLAYED = OpenApiParameter(
    REPLAYED_HEADER,
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    response=[202],
    enum=["true", "false"],
    description="Sent when the request carried an `Idempotency-Key`: `true` when an "
    "earlier request with that key (and this body) started the operation — this answer "
    "is its replay and started nothing — `false` when this request started it.",
)

#: The paginator's own parameters, with its real bounds (page_size 1–1000).
PAGE_PARAMS = [
    OpenApiParameter(p["name"], p["schema"], description=p["description"])
    for p in Pagination().get_schema_operation_parameters(None)
]

VALIDATION_EXAMPLE = OpenApiExample(
    "Duplicate ids",
    value={"session_ids": ["Duplicate session ids: demo-000001."]},
    status_codes=["400"],
    response_only=True,
)
RATE_LIMIT_EXAMPLE = OpenApiExample(
    "Rate limited",
    value={
        "detail": "Rate limit exceeded for delete: 10 per window (10/m). Try again in 42 s.",
        "code": "rate_limited",
        "retry_after": 42,
    },
    status_codes=["429"],
    response_only=True,
)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented error answers for ``codes`` (403 and 429-free reads get what they need)."""
    responses: dict[int, OpenApiResponse] = {}
    for code in codes:
        if code == 400:
            body: Any = OpenApiTypes.OBJECT
            examples = [VALIDATION_EXAMPLE]
        elif code == 429:
            body, examples = s.RateLimitedSerializer, [RATE_LIMIT_EXAMPLE]
        elif code == 413:
            body, examples = s.TooLargeSerializer, []
        else:
            body, examples = s.ErrorSerializer, []
        responses[code] = OpenApiResponse(
            body, description=ERROR_DESCRIPTIONS[code], examples=examples
        )
    return responses
