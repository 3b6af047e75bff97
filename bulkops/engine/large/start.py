"""Creating a large operation in constant writes: the operation row and its slices,
never a row per session. Its size is counted once — by the drift check's
counts when the request carries validate's ``selection_token``, else by one
``COUNT`` (``count_up_to``) — for ``total`` and the ``BULKOPS_MAX_LARGE_OPERATION_SESSIONS`` cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bulkops.conf import bulkops_settings
from bulkops.engine.drift import SelectionSnapshot, snapshot_compare
from bulkops.engine.large.counts import count_up_to, large_counts
from bulkops.engine.large.export import large_export_name
from bulkops.engine.large.scope import LargeSelection, large_cap_check
from bulkops.engine.large.workers import slices_create
from bulkops.engine.selection import filter_data
from bulkops.exceptions import SelectionTokenInvalid
from bulkops.models import BulkOperation

if TYPE_CHECKING:
    from bulkops.actions.base import BulkAction


def large_total(
    *, action: BulkAction, selection: LargeSelection, expected: SelectionSnapshot | None
) -> int:
    """How many sessions ``selection`` holds now. With ``expected`` (a token's
    snapshot) its counts by part and reason must be the same (else SelectionDrift);
    raise ValidationError past ``BULKOPS_MAX_LARGE_OPERATION_SESSIONS``."""
    if expected is None and selection.count is not None:
        total = selection.count
    elif expected is None:
        total = count_up_to(selection.rows, bulkops_settings.MAX_LARGE_OPERATION_SESSIONS)
    elif selection.filter is None:
        raise SelectionTokenInvalid("A selection_token binds a filter or a list of ids.")
    else:
        counts = large_counts(action=action, sessions=selection.rows)
        snapshot_compare(expected=expected, current=counts.snapshot(filter_data(selection.filter)))
        total = counts.total
    large_cap_check(count=total)
    return total


def large_insert(op: BulkOperation, selection: LargeSelection, *, action: BulkAction) -> int:
    """Write the operation with its selection (a filter also keeps the moment it was
    created: sessions created later are not selected) and its slices; return how many
    slices (one task each). An export's file is gzip (``engine.large.export``)."""
    spec = dict(selection.spec)
    if selection.filter is not None:
        spec["created_until"] = op.created_at.isoformat()
    op.selection = spec
    if action.produces_file:
        op.export_file = large_export_name(op.export_file, action.params["format"])
    op.save(force_insert=True)
    return slices_create(op, action)
