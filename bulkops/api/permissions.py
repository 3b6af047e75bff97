"""Who may read the API's own description (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"])."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from bulkops.conf import bulkops_settings

PUBLIC = "public"
STAFF = "staff"
API_DOCS_MODES = (PUBLIC, STAFF)


class CanReadApiDocs(BasePermission):
    """Allow ``/api/schema/`` and ``/api/docs/`` to everyone when ``BULKOPS_API_DOCS`` is
    ``"public"``, and only to authenticated active staff when it is ``"staff"`` (or any
    other value: an unknown mode fails closed). Read on each request, so a change of the
    setting (``override_settings``) takes effect at once."""

    message = "The API documentation is available to staff only."

    def has_permission(self, request, view) -> bool:
        if bulkops_settings.API_DOCS == PUBLIC:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)
