"""What every bulk action declares, and the two hooks it implements.

An action is a class with ``action_type``, ``display_name``, the model ``permission``
needed to act on other users' sessions, ``check(row)`` (a reason code or ``None``) and a
set-based ``apply(ids=…)``. The engine (``bulkops.engine``) does the rest: scope,
locking, partitioning, outcomes, counters and events. Eligibility lives only in
``check``, so validate, the admin confirmation page and the worker agree.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from bulkops.models import Session

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.models import BulkOperation


class SessionRow(NamedTuple):
    """The columns eligibility is decided on (fetched, under lock when executing).

    A NamedTuple: built once per row per chunk, and a frozen dataclass costs ~5 µs a
    row to construct (50 ms per 10,000 sessions, measured).
    """

    id: str
    owner_id: int
    status: str
    deleted_at: datetime.datetime | None
    has_exports: bool = False
    #: The action's ``apply_columns``, read with the row by a chunk's locking read.
    extra: tuple[Any, ...] = ()
    #: The locked row's ctid as text (PostgreSQL, with ``extra``): the version this
    #: transaction holds, which cannot move until it ends.
    tid: str | None = None


ROW_FIELDS = ("id", "owner_id", "status", "deleted_at")


@dataclass(frozen=True)
class SqlApply:
    """An action's chunk as one statement (PostgreSQL): the engine locks the
    chunk's rows in id order, and one ``UPDATE`` applies ``assignments`` to the locked
    rows for which ``eligible`` holds, returning them.

    ``eligible`` is a SQL condition over the locked row's columns, written
    ``locked.status``, ``locked.deleted_at``, ``locked.owner_id``; it must hold exactly
    when ``check(row)`` returns None (``tests/actions/test_sql_eligible.py`` proves it for
    every status and deleted state). ``assignments`` is the ``SET`` list of the session
    table. Both take ``%s`` parameters.
    """

    eligible: str
    eligible_params: tuple[Any, ...]
    assignments: str
    assignment_params: tuple[Any, ...]


@dataclass(frozen=True)
class Param:
    """One action parameter: its type (bool, or a choice of strings) and default, and how
    each interface presents it. The API's input serializer, the admin confirmation form
    and the ``bulk`` command's options are all generated from these."""

    default: Any
    choices: tuple[str, ...] = ()
    #: What it does, for a person: the admin form's label, the API's and CLI's help.
    label: str = ""
    #: The admin form shows it (False when each admin action fixes it, e.g. soft_delete).
    in_admin_form: bool = True
    #: The ``bulk`` flag of a boolean whose default is True (default ``--no-<name>``).
    cli_flag: str = ""
    #: What that flag does, for a person: it sets the parameter to false, which the
    #: label (it describes the parameter set) does not say (default "Turn off: <label>").
    cli_help: str = ""
    #: It changes which sessions are eligible (delete's ``soft_delete``): validate's
    #: ``selection_token`` binds its value.
    affects_eligibility: bool = False

    @property
    def is_bool(self) -> bool:
        return not self.choices

    def clean(self, name: str, value: Any) -> Any:
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ValidationError(
                    {name: f"Must be one of: {', '.join(self.choices)}."}, code="invalid"
                )
            return value
        if not isinstance(value, bool):
            raise ValidationError({name: "Must be true or false."}, code="invalid")
        return value


@dataclass(frozen=True)
class AdminVariant:
    """One admin action of a bulk action: its name, label and fixed parameters."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    #: The button that confirms gets a danger style.
    destructive: bool = False
    #: A warning the confirmation page shows prominently.
    warning: str = ""
    #: The changelist's action menu entry (default: "<label> selected sessions").
    menu_label: str = ""


#: The audit reason every action body may carry (``BulkOperation.reason``).
REASON_LABEL = "Reason (kept with the operation for the audit)"
ATOMIC = Param(default=False, label="All or nothing: if one session fails, change none")


@dataclass(frozen=True)
class Exposure:
    """How the interfaces offer an action and what they tell of it; none of it changes
    what the action does (that is ``check`` and ``apply``)."""

    #: The API path under ``/api/bulk/sessions/`` (default: ``action_type``).
    api_path: str = ""
    #: An example body for the OpenAPI schema (Swagger UI's "Try it out"): ids and
    #: filters of the demo data ``serve`` creates, so it works as given.
    api_example: dict[str, Any] = field(
        default_factory=lambda: {"session_ids": ["demo-000000", "demo-000001"]}
    )
    #: The admin actions offered for it (default: one, named ``<action>_sessions``).
    admin_variants: tuple[AdminVariant, ...] = ()
    #: For the duration estimate: sessions per second the engine sustains, measured
    #: on the 2-core reference machine (see docs/benchmarks.md).
    sessions_per_second: float = 20_000.0


class BulkAction:
    action_type: ClassVar[str]
    display_name: ClassVar[str]
    #: How the API, the admin and the estimates show it (``Exposure``).
    exposure: ClassVar[Exposure] = Exposure()
    #: Default per-user rate (django-ratelimit syntax); ``BULKOPS_RATE_LIMITS`` overrides.
    rate_limit: ClassVar[str] = "20/m"
    #: Model permission (``app_label.codename``) a staff user needs to act on sessions
    #: they do not own. Own sessions need no permission.
    permission: ClassVar[str]
    #: Reason codes that mean "already in the target state": the item is skipped.
    skip_reasons: ClassVar[frozenset[str]] = frozenset()
    #: Status a session has after the action, reported in ``sessions_updated``.
    result_status: ClassVar[str]
    params_spec: ClassVar[dict[str, Param]] = {}
    #: Whether ``check`` needs ``SessionRow.has_exports``.
    needs_exports: ClassVar[bool] = False
    #: It writes a file the user downloads: every representation of its operations
    #: carries the download link and expiry (``representations``).
    produces_file: ClassVar[bool] = False
    #: A read-only action changes no session, so rows are read without locks.
    read_only: ClassVar[bool] = False
    #: Which sessions a ``filter`` selection matches by default: live ones, or only
    #: soft-deleted ones (restore).
    filter_deleted: ClassVar[bool] = False
    #: Offered as an action on a selection of sessions (API endpoint, validate, admin
    #: action, ``bulk``). False for undo, which starts from an operation instead.
    selectable: ClassVar[bool] = True
    #: Columns of the session ``apply`` needs beyond ``SessionRow`` (archive: the
    #: content). A chunk's locking read fetches them with each row, and the engine
    #: calls ``apply_rows`` instead of ``apply``: one read of the rows, not two.
    apply_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, user: AbstractBaseUser, params: dict[str, Any]) -> None:
        self.user = user
        self.params = params

    # --- declared by the subclass ---------------------------------------------------
    def check(self, row: SessionRow) -> str | None:
        """Return the reason code that makes ``row`` ineligible or skipped, or ``None``."""
        raise NotImplementedError

    def apply(self, *, ids: list[str], operation: BulkOperation, now: datetime.datetime) -> None:
        """Apply the action to the eligible ``ids`` of one chunk, set-based."""
        raise NotImplementedError

    def apply_rows(
        self, *, rows: list[SessionRow], operation: BulkOperation, now: datetime.datetime
    ) -> None:
        """``apply`` given the eligible rows as the chunk's locking read returned them,
        ``apply_columns`` in ``SessionRow.extra`` (and, on PostgreSQL, ``tid``)."""
        self.apply(ids=[row.id for row in rows], operation=operation, now=now)

    def sql_apply(self, *, now: datetime.datetime) -> SqlApply | None:
        """Opt in to the one-statement chunk (check and apply in SQL) where eligibility
        is expressible in SQL and ``apply`` is a plain ``UPDATE``; None (the default)
        keeps ``check`` in Python and ``apply``."""
        return None

    # --- optional hooks -----------------------------------------------------------------
    def begin(self, operation: BulkOperation) -> None:
        """Called before the first chunk of an execution."""

    def finish(self, operation: BulkOperation) -> None:
        """Called after the last chunk, before the operation is marked finished."""

    def abort(self, operation: BulkOperation) -> None:
        """Called when the execution stops without finishing (cancel, timeout, error)."""

    def prepare(self, operation: BulkOperation) -> None:
        """Called on the new, unsaved operation (export names its file and expiry)."""

    def prefetch(self, ids: list[str]) -> None:
        """Called with the ids about to be ``check``-ed (a chunk, under its row locks):
        load set-based whatever ``check`` needs beyond ``SessionRow`` (undo: what the
        undone operation left)."""

    def preview(self, eligible: list[str]) -> dict[str, Any]:
        """Extra keys of validate's answer (delete: what goes with the sessions)."""
        return {}

    def preview_matching(self, eligible: QuerySet[Session]) -> dict[str, Any]:
        """``preview`` of a selection past the cap, given as a queryset of the eligible
        sessions (never their ids): the same keys, computed in SQL."""
        return {}

    def accepted(self, operation: BulkOperation) -> dict[str, Any]:
        """Extra keys of the 202 answer that started the operation (export: the file's
        ``metadata``; the download link of an action that ``produces_file`` is
        ``representations``')."""
        return {}

    @classmethod
    def required_permissions(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """Permissions needed with these parameters even on one's own sessions."""
        return ()

    @classmethod
    def label(cls, params: dict[str, Any]) -> str:
        """A person's name for what an operation with ``params`` does."""
        return cls.display_name

    # --- shared -------------------------------------------------------------------------
    @classmethod
    def path(cls) -> str:
        return cls.exposure.api_path or cls.action_type

    @classmethod
    def variants(cls) -> tuple[AdminVariant, ...]:
        return cls.exposure.admin_variants or (
            AdminVariant(f"{cls.action_type}_sessions", cls.display_name),
        )

    @classmethod
    def clean_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Return the action's parameters with defaults filled in; raise ValidationError."""
        cleaned = {}
        for name, spec in cls.params_spec.items():
            value = params.get(name, spec.default)
            cleaned[name] = spec.clean(name, value)
        return cleaned

    @property
    def atomic(self) -> bool:
        return bool(self.params.get("atomic", False))

    @property
    def max_sessions(self) -> int:
        from bulkops.conf import bulkops_settings

        return bulkops_settings.MAX_SESSIONS_PER_OPERATION

    def base_queryset(self):
        return Session.objects.all()

    def estimated_seconds(self, count: int) -> float:
        return round(count / self.exposure.sessions_per_second + 0.2, 2)
