"""The Django admin: sessions with bulk actions, and the bulk operations they start.

- ``sessions``: the changelist, one admin action per registered action variant
  (``actions``: confirmation page, then ``operation_create(source="admin")``);
- ``operations``: the read-only operations and their pages (``pages``: progress,
  cancel, retry, download);
- ``selection``: the changelist's rows as a selection; ``forms``: the options form.

Which actions a staff user sees: those they may apply to every row the changelist
shows them (``actions.may_run``).
"""

from bulkops.admin import operations, sessions  # noqa: F401  (registers the ModelAdmins)
