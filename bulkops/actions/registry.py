"""action_type -> BulkAction class; a bad declaration fails at import, not at run time."""

from __future__ import annotations

import re

from django.core.exceptions import ImproperlyConfigured

from bulkops.actions.base import BulkAction

_REGISTRY: dict[str, type[BulkAction]] = {}
_PERMISSION = re.compile(r"^[a-z_]+\.[a-z_]+$")


def register(cls: type[BulkAction]) -> type[BulkAction]:
    """Class decorator: validate the action's declaration and register it."""
    action_type = getattr(cls, "action_type", "")
    if not action_type or not re.fullmatch(r"[a-z_]+", action_type):
        raise ImproperlyConfigured(f"{cls.__name__}: action_type must be lowercase letters")
    if action_type in _REGISTRY:
        raise ImproperlyConfigured(f"{cls.__name__}: action {action_type!r} already registered")
    for attr in ("display_name", "result_status"):
        if not getattr(cls, attr, ""):
            raise ImproperlyConfigured(f"{cls.__name__}: {attr} is required")
    if not _PERMISSION.match(getattr(cls, "permission", "")):
        raise ImproperlyConfigured(f"{cls.__name__}: permission must be 'app_label.codename'")
    if cls.check is BulkAction.check or cls.apply is BulkAction.apply:
        raise ImproperlyConfigured(f"{cls.__name__}: check() and apply() must be implemented")
    _REGISTRY[action_type] = cls
    return cls


def unregister(action_type: str) -> None:
    """Remove an action (a plug-in withdrawn; tests that register a throwaway one)."""
    _REGISTRY.pop(action_type, None)


def get_action(action_type: str) -> type[BulkAction]:
    """Return the action class; raise KeyError for an unknown action."""
    return _REGISTRY[action_type]


def registered_actions() -> dict[str, type[BulkAction]]:
    """Every registered action by ``action_type``, in registration order."""
    return dict(_REGISTRY)


def selectable_actions() -> dict[str, type[BulkAction]]:
    """The actions a person starts on a selection of sessions (``BulkAction.selectable``):
    the API's action endpoints and validate, the admin's actions, the ``bulk`` command.
    The others (undo) start from an operation instead."""
    return {name: cls for name, cls in _REGISTRY.items() if cls.selectable}
