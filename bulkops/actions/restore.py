"""restore: undo a soft delete."""

from bulkops.actions import reasons
from bulkops.actions.base import BulkAction, Exposure, SessionRow, SqlApply
from bulkops.actions.registry import register
from bulkops.actions.sql import AnyOf
from bulkops.models import Session, SessionStatus


@register
class RestoreAction(BulkAction):
    action_type = "restore"
    display_name = "Restore"
    permission = "bulkops.change_session"
    skip_reasons = frozenset({reasons.NOT_DELETED})
    result_status = "restored"
    filter_deleted = True
    rate_limit = "20/m"
    exposure = Exposure(
        api_example={"session_ids": ["demo-000007", "demo-000027"]},
        sessions_per_second=50_000.0,
    )

    def check(self, row: SessionRow) -> str | None:
        if row.status == SessionStatus.PROCESSING:
            return reasons.PROCESSING
        if row.deleted_at is None:
            return reasons.NOT_DELETED
        return None

    def apply(self, *, ids, operation, now) -> None:
        Session.objects.filter(AnyOf("pk", ids)).update(deleted_at=None, updated_at=now)

    def sql_apply(self, *, now) -> SqlApply:
        return SqlApply(
            eligible="locked.status <> %s AND locked.deleted_at IS NOT NULL",
            eligible_params=(SessionStatus.PROCESSING,),
            assignments="deleted_at = NULL, updated_at = %s",
            assignment_params=(now,),
        )
