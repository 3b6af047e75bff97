"""close: status=closed, closed_at set."""

from bulkops.actions import reasons
from bulkops.actions.base import ATOMIC, BulkAction, Exposure, SessionRow, SqlApply
from bulkops.actions.registry import register
from bulkops.actions.sql import AnyOf
from bulkops.models import Session, SessionStatus


@register
class CloseAction(BulkAction):
    action_type = "close"
    display_name = "Close"
    permission = "bulkops.change_session"
    skip_reasons = frozenset({reasons.ALREADY_CLOSED})
    result_status = SessionStatus.CLOSED
    params_spec = {"atomic": ATOMIC}
    rate_limit = "20/m"
    exposure = Exposure(
        api_example={"filter": {"status": "active"}, "atomic": False},
        sessions_per_second=50_000.0,
    )

    def check(self, row: SessionRow) -> str | None:
        if row.deleted_at is not None:
            return reasons.DELETED
        if row.status == SessionStatus.PROCESSING:
            return reasons.PROCESSING
        if row.status == SessionStatus.ARCHIVED:
            return reasons.ARCHIVED
        if row.status == SessionStatus.CLOSED:
            return reasons.ALREADY_CLOSED
        return None

    def apply(self, *, ids, operation, now) -> None:
        Session.objects.filter(AnyOf("pk", ids)).update(
            status=SessionStatus.CLOSED, closed_at=now, updated_at=now
        )

    def sql_apply(self, *, now) -> SqlApply:
        return SqlApply(
            eligible="locked.deleted_at IS NULL AND locked.status NOT IN (%s, %s, %s)",
            eligible_params=(
                SessionStatus.PROCESSING,
                SessionStatus.ARCHIVED,
                SessionStatus.CLOSED,
            ),
            assignments="status = %s, closed_at = %s, updated_at = %s",
            assignment_params=(SessionStatus.CLOSED, now, now),
        )
