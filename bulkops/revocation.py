"""Revoked access reaches open WebSockets: when a user is deactivated or deleted, or a
DRF token is deleted, the connections it authenticated are told to close
(``events.publish_access_revoked``, through the channel layer: every server), once the
change has committed. Changes that send no signal (``QuerySet.update``, raw SQL) are
caught by each connection's periodic re-check (``BULKOPS_WS_RECHECK_SECONDS``).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from rest_framework.authtoken.models import Token

from bulkops import events


def _revoke(user_id: int, token_key: str | None = None) -> None:
    transaction.on_commit(
        lambda: events.publish_access_revoked(user_id=user_id, token_key=token_key)
    )


def _user_saved(sender, instance, **kwargs) -> None:
    if not instance.is_active:
        _revoke(instance.pk)


def _user_deleted(sender, instance, **kwargs) -> None:
    _revoke(instance.pk)


def _token_deleted(sender, instance, **kwargs) -> None:
    _revoke(instance.user_id, instance.key)


def connect() -> None:
    """Connect the receivers (AppConfig.ready)."""
    users = get_user_model()
    post_save.connect(_user_saved, sender=users, dispatch_uid="bulkops-revoke-user-saved")
    post_delete.connect(_user_deleted, sender=users, dispatch_uid="bulkops-revoke-user-deleted")
    post_delete.connect(_token_deleted, sender=Token, dispatch_uid="bulkops-revoke-token")
