"""undo: reverse what a finished operation did to the sessions it succeeded on.

Started from an operation (``POST /api/bulk/operations/{id}/undo``, the admin's *Undo*,
``bulk undo``), never on a selection (``selectable = False``); its parameters are
``{"undoes": <operation id>}`` and its items are exactly the undone operation's
succeeded items. Per kind:

- soft delete → ``deleted_at`` cleared (restored);
- close → ``status`` back to the item's ``previous_status``, ``closed_at`` cleared;
- archive → ``content`` decompressed back from the blob, blob, sizes and
  ``archived_at`` cleared, ``status`` back to ``previous_status``.

Under the chunk's row locks each session must still be as the undone operation left it
(its ``closed_at`` / ``archived_at`` / ``deleted_at`` stamped while that operation ran);
otherwise the item fails (``changed_since``, or ``processing`` / ``deleted``) and the
session is not touched. Hard delete, a soft delete with ``cascade_exports`` (its
exports are gone), export and restore cannot be undone, nor can an undo (``refusal``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cached_property
from typing import Any

from django.core.exceptions import ValidationError

from bulkops import itemstore
from bulkops.actions import reasons
from bulkops.actions.archive import decompress_content
from bulkops.actions.base import BulkAction, Exposure, SessionRow
from bulkops.actions.registry import get_action, register
from bulkops.actions.sql import AnyOf
from bulkops.exceptions import OperationConflict
from bulkops.models import BulkOperation, Session, SessionStatus

OPERATION_ID_RE = re.compile(r"op-[0-9a-f]{32}")
#: The timestamp each undoable action sets, by action type.
STAMP_FIELD = {"close": "closed_at", "archive": "archived_at", "delete": "deleted_at"}
#: The status a session is left in, by action type (soft delete keeps the status).
LEFT_STATUS = {"close": SessionStatus.CLOSED, "archive": SessionStatus.ARCHIVED}
#: Ids per query of ``prefetch`` (well under SQLite's variable limit).
PREFETCH_BATCH = 2000
#: Rows per UPDATE when an archive is undone (each carries its whole content).
UNARCHIVE_BATCH = 500
UNARCHIVE_FIELDS = (
    "content",
    "status",
    "archive_blob",
    "archive_original_size",
    "archive_compressed_size",
    "archived_at",
    "updated_at",
)


def refusal(action: str, params: dict[str, Any]) -> str | None:
    """Why an operation of ``action`` with ``params`` can never be undone, or None."""
    if action == UndoAction.action_type:
        return "An undo cannot be undone; run the action again instead."
    if action == "delete" and not params.get("soft_delete", True):
        return "A hard delete cannot be undone: the sessions' rows are gone."
    if action == "delete" and params.get("cascade_exports"):
        return (
            "A delete with cascade_exports cannot be undone: the sessions' exports were "
            "removed with them, and an undo would bring back the sessions without them."
        )
    if action not in STAMP_FIELD:
        return f"{get_action(action).label(params)} cannot be undone."
    return None


class _UndonePermission:
    """The permission of the undone action (on the class: change_session, which the
    registry checks): undoing needs what doing needed."""

    def __get__(self, obj: UndoAction | None, owner: type) -> str:
        if obj is None:
            return "bulkops.change_session"
        return get_action(obj.undone.action).permission


@register
class UndoAction(BulkAction):
    action_type = "undo"
    display_name = "Undo"
    permission = _UndonePermission()  # type: ignore[assignment]
    result_status = "undone"
    selectable = False
    rate_limit = "10/m"
    exposure = Exposure(sessions_per_second=10_000.0)

    def __init__(self, *, user, params) -> None:
        super().__init__(user=user, params=params)
        self.previous: dict[str, str] = {}
        self.stamps: dict[str, Any] = {}

    @classmethod
    def clean_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        undoes = params.get("undoes")
        if not isinstance(undoes, str) or not OPERATION_ID_RE.fullmatch(undoes):
            raise ValidationError({"undoes": "Must be an operation id (op- + 32 hex digits)."})
        return {"undoes": undoes}

    @classmethod
    def label(cls, params: dict[str, Any]) -> str:
        return f"Undo of {params.get('undoes', '?')}"

    @cached_property
    def undone(self) -> BulkOperation:
        """The operation this one reverses; OperationConflict when it no longer exists
        (cleanup keeps it while an undo of it is kept, but its owner may be deleted)."""
        undone = BulkOperation.objects.filter(pk=self.params["undoes"]).first()
        if undone is None:
            raise OperationConflict(
                f"The operation this undo reverses ({self.params['undoes']}) no longer "
                "exists, so there is nothing left to undo; its sessions stay as they are."
            )
        return undone

    @property
    def kind(self) -> str:
        return self.undone.action

    @property
    def max_sessions(self) -> int:
        # Exactly the undone operation's succeeded items, however the cap changed since.
        return max(super().max_sessions, self.undone.total)

    def prefetch(self, ids: list[str]) -> None:
        """Each session's status before the undone operation, and the stamp it left."""
        stamp = STAMP_FIELD.get(self.kind, "deleted_at")
        self.previous, self.stamps = {}, {}
        for start in range(0, len(ids), PREFETCH_BATCH):
            batch = ids[start : start + PREFETCH_BATCH]
            self.previous.update(
                itemstore.previous_statuses(operation_id=self.params["undoes"], ids=batch)
            )
            self.stamps.update(Session.objects.filter(AnyOf("pk", batch)).values_list("pk", stamp))

    def _as_left(self, row: SessionRow) -> bool:
        """The session is as the undone operation left it: in its status, with the
        stamp that operation set (not a later one)."""
        left_status = LEFT_STATUS.get(self.kind)
        if left_status is not None and row.status != left_status:
            return False
        stamp, op = self.stamps.get(row.id), self.undone
        if stamp is None or op.started_at is None or op.finished_at is None:
            return False
        return op.started_at <= stamp <= op.finished_at

    def check(self, row: SessionRow) -> str | None:
        if row.status == SessionStatus.PROCESSING:
            return reasons.PROCESSING
        if self.kind != "delete" and row.deleted_at is not None:
            return reasons.DELETED
        if not self.previous.get(row.id) or not self._as_left(row):
            return reasons.CHANGED_SINCE
        return None

    def apply(self, *, ids, operation, now) -> None:
        if not ids:
            return
        if self.kind == "delete":
            Session.objects.filter(AnyOf("pk", ids)).update(deleted_at=None, updated_at=now)
        elif self.kind == "close":
            for previous, group in self._by_previous(ids).items():
                Session.objects.filter(AnyOf("pk", group)).update(
                    status=previous, closed_at=None, updated_at=now
                )
        else:
            self._unarchive(ids, now)

    def _by_previous(self, ids: list[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for sid in ids:
            groups[self.previous[sid]].append(sid)
        return groups

    def _unarchive(self, ids: list[str], now) -> None:
        """Decompress the chunk's blobs (read in one query) and write the content back
        with the previous status, in batched UPDATEs (never one save() per row)."""
        rows = Session.objects.filter(AnyOf("pk", ids)).order_by().values_list("pk", "archive_blob")
        sessions = [
            Session(
                pk=sid,
                content=decompress_content(blob),
                status=self.previous[sid],
                archive_blob=None,
                archive_original_size=None,
                archive_compressed_size=None,
                archived_at=None,
                updated_at=now,
            )
            for sid, blob in rows
        ]
        Session.objects.bulk_update(sessions, UNARCHIVE_FIELDS, batch_size=UNARCHIVE_BATCH)
