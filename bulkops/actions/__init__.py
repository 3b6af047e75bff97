"""One module per bulk action; importing this package registers them all."""

from bulkops.actions import archive, close, delete, export, restore, undo  # noqa: F401
from bulkops.actions.base import BulkAction, SessionRow
from bulkops.actions.registry import get_action, registered_actions, selectable_actions

__all__ = [
    "BulkAction",
    "SessionRow",
    "get_action",
    "registered_actions",
    "selectable_actions",
]
