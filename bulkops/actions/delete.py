"""delete: soft (deleted_at set, the default) or hard (rows removed).

Exports go with the sessions when ``cascade_exports``; a hard delete of a session that
still has exports is refused (``has_exports``) otherwise. Hard delete always needs
``bulkops.hard_delete_session``.
"""

from typing import Any

from django.db.models import QuerySet

from bulkops.actions import reasons
from bulkops.actions.base import (
    ATOMIC,
    AdminVariant,
    BulkAction,
    Exposure,
    Param,
    SessionRow,
    SqlApply,
)
from bulkops.actions.registry import register
from bulkops.actions.sql import AnyOf
from bulkops.models import Session, SessionExport

HARD_DELETE_PERMISSION = "bulkops.hard_delete_session"
#: Ids per count query of the cascade preview (well under SQLite's variable limit).
PREVIEW_BATCH = 2000


def exports_of(ids: list[str]) -> QuerySet[SessionExport]:
    return SessionExport.objects.filter(AnyOf("session_id", ids))


@register
class DeleteAction(BulkAction):
    action_type = "delete"
    display_name = "Delete"
    permission = "bulkops.delete_session"
    skip_reasons = frozenset({reasons.ALREADY_DELETED})
    result_status = "deleted"
    params_spec = {
        "soft_delete": Param(
            default=True,
            label="Soft delete (set deleted_at); false removes the rows",
            in_admin_form=False,
            cli_flag="--hard",
            cli_help="Hard delete: remove the rows (needs bulkops.hard_delete_session; "
            "default: soft delete, setting deleted_at)",
            affects_eligibility=True,
        ),
        "cascade_exports": Param(
            default=False,
            label="Also delete the sessions' exports (the delete then cannot be undone)",
            affects_eligibility=True,
        ),
        "atomic": ATOMIC,
    }
    rate_limit = "10/m"
    exposure = Exposure(
        api_example={"session_ids": ["demo-000002"], "soft_delete": True, "cascade_exports": False},
        admin_variants=(
            AdminVariant("soft_delete_sessions", "Soft delete", {"soft_delete": True}, True),
            AdminVariant(
                "hard_delete_sessions",
                "Hard delete",
                {"soft_delete": False},
                True,
                warning="Hard delete removes the sessions’ rows permanently. It cannot be undone.",
            ),
        ),
        sessions_per_second=50_000.0,
    )

    def __init__(self, *, user, params) -> None:
        super().__init__(user=user, params=params)
        self.soft = bool(params.get("soft_delete", True))
        self.cascade = bool(params.get("cascade_exports", False))
        self.may_hard_delete = user.has_perm(HARD_DELETE_PERMISSION)

    @property
    def needs_exports(self) -> bool:  # type: ignore[override]
        return not self.soft and not self.cascade

    def check(self, row: SessionRow) -> str | None:
        if self.soft:
            if row.status == "processing":
                return reasons.PROCESSING
            if row.deleted_at is not None:
                return reasons.ALREADY_DELETED
            return None
        if not self.may_hard_delete:
            return reasons.PERMISSION_DENIED
        if row.status == "processing":
            return reasons.PROCESSING
        if not self.cascade and row.has_exports:
            return reasons.HAS_EXPORTS
        return None

    def preview(self, eligible: list[str]) -> dict[str, Any]:
        """What goes with the sessions: their exports, when ``cascade_exports``."""
        removed = 0
        if self.cascade:
            removed = sum(
                exports_of(eligible[i : i + PREVIEW_BATCH]).count()
                for i in range(0, len(eligible), PREVIEW_BATCH)
            )
        return {"cascade": {"exports": removed}}

    def preview_matching(self, eligible: QuerySet[Session]) -> dict[str, Any]:
        removed = 0
        if self.cascade:
            removed = SessionExport.objects.filter(session__in=eligible.values("pk")).count()
        return {"cascade": {"exports": removed}}

    @classmethod
    def required_permissions(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return () if params.get("soft_delete", True) else (HARD_DELETE_PERMISSION,)

    @classmethod
    def label(cls, params: dict[str, Any]) -> str:
        return "Soft delete" if params.get("soft_delete", True) else "Hard delete"

    def sql_apply(self, *, now) -> SqlApply | None:
        """Soft delete without cascade is one UPDATE; hard delete (has_exports) and the
        cascade (exports go first) keep ``apply``."""
        if not self.soft or self.cascade:
            return None
        return SqlApply(
            eligible="locked.status <> %s AND locked.deleted_at IS NULL",
            eligible_params=("processing",),
            assignments="deleted_at = %s, updated_at = %s",
            assignment_params=(now, now),
        )

    def apply(self, *, ids, operation, now) -> None:
        if self.cascade:
            exports_of(ids).delete()
        if self.soft:
            Session.objects.filter(AnyOf("pk", ids)).update(deleted_at=now, updated_at=now)
        else:
            # No signals or cascades hang off Session (exports are PROTECTed and were
            # handled above), so one DELETE … WHERE id IN (…) is all it takes.
            qs = Session.objects.filter(AnyOf("pk", ids))
            qs._raw_delete(qs.db)
