"""The rules of the inputs every interface takes beside an action's parameters (which
``actions.base.Param`` declares): the failure threshold and the keys of a selection
filter.

Each rule lives here once, and the interfaces are generated from it: the API's
serializer fields call ``problem`` (their OpenAPI types come from the same
declaration), the ``bulk`` command's argparse types call ``from_text`` then
``problem``, and the engine checks again what any caller hands it. A rule answers in a
sentence a person can act on, without naming the input (each interface names it its
own way: a JSON field, a ``--flag``).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from bulkops.models import SESSION_ID_REGEX, SessionStatus

INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
SESSION_ID_RE = re.compile(SESSION_ID_REGEX)


# --- dates ----------------------------------------------------------------------------------
def parse_moment(value: Any) -> datetime.datetime | None:
    """An ISO 8601 date (midnight UTC) or date-time, as an aware UTC datetime; None when
    ``value`` is not one. UTC because PostgreSQL refuses some offsets ISO 8601 allows."""
    if not isinstance(value, str):
        return None
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is None:
                return None
            moment = datetime.datetime.combine(day, datetime.time.min)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, datetime.UTC)
        return moment.astimezone(datetime.UTC)
    except (ValueError, OverflowError):
        return None  # well-formed but impossible, e.g. 2024-02-30


# --- one rule -------------------------------------------------------------------------------
class InputRule:
    """What one input's value must be (``valid``; ``message`` says it to a person), and
    how a command line's text becomes that value (``from_text``: anything it cannot
    read is handed on as text, for ``problem`` to refuse)."""

    message: str
    #: What the input does, for a person (the API's and the CLI's help).
    help: str = ""

    def valid(self, value: Any) -> bool:
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None when it is valid."""
        return None if self.valid(value) else self.message

    def from_text(self, text: str) -> Any:
        return text


@dataclass(frozen=True)
class IntegerRule(InputRule):
    """An integer from ``minimum`` to ``maximum`` (a JSON integer: booleans, strings and
    floats are refused, not coerced)."""

    minimum: int
    maximum: int
    help: str = ""

    @property
    def message(self) -> str:  # type: ignore[override]
        return f"Must be an integer from {self.minimum} to {self.maximum}."

    def valid(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.minimum <= value <= self.maximum
        )

    def from_text(self, text: str) -> Any:
        return int(text) if INTEGER_TEXT.fullmatch(text) else text


#: The largest ``max_failures`` accepted (far above any operation's size).
MAX_FAILURES_LIMIT = 1_000_000
MAX_FAILURES = IntegerRule(
    minimum=0,
    maximum=MAX_FAILURES_LIMIT,
    help="Stop once more than this many sessions have failed (0: at the first failure): "
    "the rest end cancelled (failure_threshold), the operation failed.",
)


def clean_max_failures(max_failures: Any) -> int | None:
    """The failure threshold: None (no threshold) or what ``MAX_FAILURES`` allows; raise
    ValidationError otherwise."""
    if max_failures is not None and not MAX_FAILURES.valid(max_failures):
        raise ValidationError({"max_failures": MAX_FAILURES.message})
    return max_failures


# --- the keys of a selection filter ---------------------------------------------------------
MAX_SEARCH_LENGTH = 200
MAX_OWNER_LENGTH = 150
#: Larger numbers cannot be a primary key (bigint): such an ``owner`` is a username.
MAX_OWNER_ID = 2**63 - 1
#: A username in a filter: Django's username characters, ASCII only.
USERNAME_REGEX = rf"[A-Za-z0-9_.@+-]{{1,{MAX_OWNER_LENGTH}}}"


class FilterKey(InputRule):
    """One key of a selection filter; ``as_data`` is its value as ``SessionFilterSet``
    form data (the FilterSet then filters by it)."""

    def as_data(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class StatusesKey(FilterKey):
    """A session status, or a non-empty list of them; ``a,b`` on a command line."""

    help: str = ""
    message = f"Must be one of {', '.join(SessionStatus.values)}, or a non-empty list of them."

    def valid(self, value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        return bool(values) and all(
            isinstance(v, str) and v in SessionStatus.values for v in values
        )

    def as_data(self, value: Any) -> list[str]:
        return value if isinstance(value, list) else [value]

    def from_text(self, text: str) -> Any:
        return text.split(",") if "," in text else text


@dataclass(frozen=True)
class TextKey(FilterKey):
    """Text of at most ``max_length`` characters, taken as it is (never trimmed)."""

    max_length: int
    help: str = ""

    @property
    def message(self) -> str:  # type: ignore[override]
        return f"Must be text of at most {self.max_length} characters, without NUL."

    def valid(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.max_length and "\x00" not in value


@dataclass(frozen=True)
class MomentKey(FilterKey):
    """An ISO 8601 date or date-time (``parse_moment``), handed on as text."""

    help: str = ""
    message = "Must be an ISO 8601 date or date-time."

    def valid(self, value: Any) -> bool:
        return parse_moment(value) is not None


@dataclass(frozen=True)
class OwnerKey(FilterKey):
    """A user id (a JSON integer; digits on a command line) or a username (ASCII)."""

    help: str = ""
    message = "Must be a user id (integer) or a username."

    def valid(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return 1 <= value <= MAX_OWNER_ID
        return isinstance(value, str) and bool(re.fullmatch(USERNAME_REGEX, value, flags=re.ASCII))

    def as_data(self, value: Any) -> str:
        return str(value)


@dataclass(frozen=True)
class BooleanKey(FilterKey):
    """``true`` or ``false`` (a JSON boolean; the word on a command line)."""

    help: str = ""
    message = "Must be true or false."

    def valid(self, value: Any) -> bool:
        return isinstance(value, bool)

    def as_data(self, value: Any) -> str:
        return "true" if value else "false"

    def from_text(self, text: str) -> Any:
        return {"true": True, "false": False}.get(text.lower(), text)


FILTER_KEYS: dict[str, FilterKey] = {
    "status": StatusesKey(help="A status or a list of them."),
    "search": TextKey(max_length=MAX_SEARCH_LENGTH, help="Text in the title or id."),
    "created_after": MomentKey(help="Inclusive; ISO date or date-time."),
    "created_before": MomentKey(help="Exclusive; ISO date or date-time."),
    "owner": OwnerKey(help="User id or username; widens anything only for staff."),
    "deleted": BooleanKey(
        help="true: only soft-deleted sessions; false: only live ones "
        "(absent: live ones, or soft-deleted ones for restore)."
    ),
}


def unknown_filter_keys(keys: list[str]) -> str:
    return (
        f"Unknown filter keys: {', '.join(sorted(keys))}. "
        f"Allowed: {', '.join(sorted(FILTER_KEYS))}."
    )


def filter_from_text(pairs: list[str]) -> dict[str, Any]:
    """A selection filter from ``KEY=VALUE`` texts (``bulk --filter``), each value read
    by its key's rule (``status=active,closed`` is a list, ``deleted=true`` a boolean);
    a key given twice keeps its last value. Raise ValidationError naming what is wrong."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValidationError({"filter": f"Each filter is key=value; got {pair!r}."})
        if key not in FILTER_KEYS:
            raise ValidationError({"filter": unknown_filter_keys([key])})
        value = FILTER_KEYS[key].from_text(text)
        problem = FILTER_KEYS[key].problem(value)
        if problem:
            raise ValidationError({f"filter.{key}": problem})
        result[key] = value
    return result


# --- session id lists ------------------------------------------------------------------
def _duplicates(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    duplicates: dict[str, None] = {}
    for sid in ids:
        if sid in seen:
            duplicates[sid] = None
        seen.add(sid)
    return list(duplicates)


def session_ids_problem(session_ids: Any, *, cap: int) -> str | None:
    """What is wrong with ``session_ids`` in one sentence a person can act on, or None:
    1…``cap`` distinct strings of the id format (``SESSION_ID_REGEX``)."""
    if not isinstance(session_ids, list):
        return "Must be a list of session id strings."
    if not session_ids:
        return "Select at least one session."
    if len(session_ids) > cap:
        return f"At most {cap} sessions per operation; got {len(session_ids)}."
    positions = [i for i, sid in enumerate(session_ids) if not isinstance(sid, str)]
    if positions:
        return f"Every id must be a string; positions {positions[:10]} are not."
    malformed = [sid for sid in session_ids if not SESSION_ID_RE.fullmatch(sid)]
    if malformed:
        shown = ", ".join(repr(sid[:70]) for sid in malformed[:5])
        return (
            f"Malformed session ids ({len(malformed)}): {shown}. An id is 1–64 letters, "
            "digits, '_' or '-', starting with a letter or digit."
        )
    duplicates = _duplicates(session_ids)
    if duplicates:
        return f"Duplicate session ids: {', '.join(duplicates[:20])}."
    return None


def clean_session_ids(session_ids: Any, *, cap: int) -> list[str]:
    """Return the ids as a list; raise ValidationError naming what is wrong."""
    problem = session_ids_problem(session_ids, cap=cap)
    if problem:
        raise ValidationError({"session_ids": problem})
    return list(session_ids)
