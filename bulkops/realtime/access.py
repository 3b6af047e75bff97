"""The WebSocket consumer's watch over its user's access (mixed into
``BulkOperationsConsumer``): an authenticated connection closes (4401, after an
``access_revoked`` error) once its user is deactivated or deleted, or the token it
authenticated with is deleted — at once when ``bulkops.revocation`` announces it through
the channel layer (every server gets it), and at the latest at the next periodic
re-check, every ``BULKOPS_WS_RECHECK_SECONDS`` (what no signal announces:
``QuerySet.update``, raw SQL)."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from bulkops import events
from bulkops.conf import bulkops_settings
from bulkops.selectors import access_holds

logger = logging.getLogger("bulkops.realtime")
CLOSE_REVOKED = 4401
_access_holds = database_sync_to_async(access_holds)


class AccessWatch:
    """Needs ``self.user`` (set once authenticated), ``self.token_key`` (the token it
    authenticated with, or None), ``send_error`` and ``close``."""

    revoked = False
    recheck_task: asyncio.Task | None = None

    def watch_access(self) -> None:
        """Start the periodic re-check (once authenticated)."""
        self.recheck_task = asyncio.ensure_future(self._recheck())

    def stop_watching_access(self) -> None:
        if self.recheck_task is not None:
            self.recheck_task.cancel()

    async def _recheck(self) -> None:
        """Every ``BULKOPS_WS_RECHECK_SECONDS``, whether the access still holds (what
        no signal announced: ``QuerySet.update``, raw SQL, another deployment's code)."""
        while True:
            await asyncio.sleep(bulkops_settings.WS_RECHECK_SECONDS)
            if self.revoked:
                return
            try:
                holds = await _access_holds(user_id=self.user.pk, token_key=self.token_key)
            except Exception as exc:  # the database away: keep the connection, try again
                logger.warning("WebSocket access not re-checked: %r", exc)
                continue
            if not holds:
                await self._revoke()

    async def bulk_access_revoked(self, message: dict) -> None:
        """The user lost access (``token`` None), or the token named by its digest was
        deleted: close, unless this connection authenticated otherwise."""
        token = message.get("token")
        if token is None or (
            self.token_key is not None and token == events.token_digest(self.token_key)
        ):
            await self._revoke()

    async def _revoke(self) -> None:
        """Say why, then close 4401; nothing more is answered or relayed."""
        if self.revoked:
            return
        self.revoked = True
        self.user = None
        await self.send_error(
            "access_revoked",
            "Access revoked (the user was deactivated or deleted, or the token deleted); closing.",
        )
        await self.close(code=CLOSE_REVOKED)
