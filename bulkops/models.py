"""Sessions, their exports, and the bulk operations run on them.

Fields, choices and constraints only: the rules live in ``bulkops.actions`` and
``bulkops.engine``.
"""

import secrets
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# \Z, not $: "$" also matches before a trailing newline.
#: The session id format: the one definition; match it with ``fullmatch``.
SESSION_ID_REGEX = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
SESSION_ID_PATTERN = rf"^{SESSION_ID_REGEX}\Z"
#: Longest audit reason an operation keeps (``BulkOperation.reason``).
MAX_REASON_LENGTH = 500
session_id_validator = RegexValidator(
    SESSION_ID_PATTERN,
    _("A session id is 1–64 letters, digits, '_' or '-', starting with a letter or digit."),
)


def new_session_id() -> str:
    return f"session-{uuid.uuid4().hex[:16]}"


def new_operation_id() -> str:
    return f"op-{secrets.token_hex(16)}"


class SessionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    PROCESSING = "processing", _("Processing")
    CLOSED = "closed", _("Closed")
    ARCHIVED = "archived", _("Archived")


class Session(models.Model):
    id = models.CharField(
        primary_key=True,
        max_length=64,
        default=new_session_id,
        validators=[session_id_validator],
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="bulk_sessions",
        db_index=False,  # (owner, status, deleted_at) and (owner, created_at) lead with it
    )
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=16, choices=SessionStatus.choices, default=SessionStatus.ACTIVE
    )
    content = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    archive_blob = models.BinaryField(null=True, blank=True, editable=False)
    archive_original_size = models.PositiveBigIntegerField(null=True, blank=True)
    archive_compressed_size = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        permissions = [
            ("hard_delete_session", "Can hard delete sessions (rows removed)"),
            (
                "run_large_operation",
                "Can run bulk operations on a filter past the per-operation cap",
            ),
        ]
        indexes = [
            # Covers the per-status counts of one owner (an index-only scan; see
            # selectors.session_counts_by_status) as well as (owner) and (owner, status).
            models.Index(fields=["owner", "status", "deleted_at"], name="session_owner_status_del"),
            models.Index(fields=["owner", "created_at"], name="session_owner_created"),
            models.Index(fields=["created_at"], name="session_created"),
            # Every live session in list order (read backwards: created_at DESC, id ASC;
            # new rows go to its right end, so it does not bloat): a staff-wide first
            # page reads 50 entries, a deep page's ids come from it alone (index-only).
            models.Index(
                fields=["created_at", "-id"],
                condition=Q(deleted_at__isnull=True),
                name="session_live_created",
            ),
            models.Index(fields=["deleted_at"], name="session_deleted"),
            # ``ordering=title`` (tie-break ``id``, either direction): a user's live rows,
            # and everyone's, read in order instead of sorted.
            models.Index(
                fields=["owner", "title", "id"],
                condition=Q(deleted_at__isnull=True),
                name="session_owner_live_title",
            ),
            models.Index(
                fields=["title", "id"],
                condition=Q(deleted_at__isnull=True),
                name="session_live_title",
            ),
            # On PostgreSQL, migration 0007 adds GIN indexes on (owner, UPPER(title)) and
            # (owner, UPPER(id)) — pg_trgm, btree_gin — for ``search`` (icontains) within
            # one owner's rows or everyone's; they are not declared here because SQLite
            # has no such index.
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=SessionStatus.values), name="session_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.id

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    JSON = "json", "JSON"


class SessionExport(models.Model):
    """A file previously produced from one session; ``cascade_exports`` decides its fate
    when the session is deleted (PROTECT: a hard delete never removes one silently)."""

    session = models.ForeignKey(Session, on_delete=models.PROTECT, related_name="exports")
    format = models.CharField(max_length=8, choices=ExportFormat.choices, default=ExportFormat.CSV)
    file = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.session_id} ({self.format})"


class OperationStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    #: Stopped at a chunk boundary on request; ``resume`` makes it pending again.
    PAUSED = "paused", _("Paused")
    COMPLETED = "completed", _("Completed")
    PARTIAL = "partial", _("Partial")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


#: Not finished: these count toward BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER (a paused
#: operation still means to act on its sessions).
ACTIVE_OPERATION_STATUSES = (
    OperationStatus.PENDING,
    OperationStatus.RUNNING,
    OperationStatus.PAUSED,
)
FINISHED_OPERATION_STATUSES = (
    OperationStatus.COMPLETED,
    OperationStatus.PARTIAL,
    OperationStatus.FAILED,
    OperationStatus.CANCELLED,
)


class OperationSource(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", _("Admin")
    CLI = "cli", _("Command line")


class BulkOperation(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_operation_id, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="bulk_operations",
        db_index=False,  # operation_user_created leads with it
    )
    action = models.CharField(max_length=16)
    params = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=MAX_REASON_LENGTH, blank=True, default="")
    source = models.CharField(
        max_length=8, choices=OperationSource.choices, default=OperationSource.API
    )
    status = models.CharField(
        max_length=16, choices=OperationStatus.choices, default=OperationStatus.PENDING
    )
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    #: Asked to pause: the worker stops at the next chunk boundary (status ``paused``).
    pause_requested = models.BooleanField(default=False)
    paused_at = models.DateTimeField(null=True, blank=True)
    #: Time spent paused, which does not count toward the operation timeout.
    paused_seconds = models.FloatField(default=0.0)
    attempts = models.PositiveSmallIntegerField(default=0)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    export_file = models.CharField(max_length=255, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    #: A large operation's selection, which its workers resolve slice by slice (its
    #: items are written as its chunks run): ``{"filter": {…}, "created_until": ISO}``,
    #: or ``{"items_of": <operation id>, "outcome": …, "exclude_reasons": […]}`` (the
    #: retry or undo of a large operation). None: the items were written at creation.
    selection = models.JSONField(null=True, blank=True, editable=False)
    #: What the confirmation page previewed as skipped or not eligible and the person
    #: chose to leave out (run "on the eligible sessions only"): no item, never a
    #: failure. ``{"skipped"|"ineligible": [{"reason", "count", "sample": [ids]}]}``.
    excluded = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="operation_user_created"),
            # A user's unfinished operations (the active cap, counted on every start):
            # only those are in it, so the count reads what it counts, however many
            # operations the user has finished.
            models.Index(
                fields=["user"],
                condition=Q(status__in=ACTIVE_OPERATION_STATUSES),
                name="operation_user_active",
            ),
            # Everyone's operations newest first (a superuser's admin list, cleanup).
            models.Index(fields=["-created_at", "-id"], name="operation_created"),
            models.Index(fields=["status", "heartbeat_at"], name="operation_status_heartbeat"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="operation_idempotency_key_per_user",
            ),
            models.CheckConstraint(
                condition=Q(status__in=OperationStatus.values), name="operation_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.id} ({self.status})"

    def refresh_from_db(self, using=None, fields=None, from_queryset=None) -> None:
        """Reload, keeping the loaded ``user``: an operation's user never changes, and
        every event built after a reload reads it (one query per reload otherwise)."""
        user = self._state.fields_cache.get("user")
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        if user is not None and user.pk == self.user_id:
            self._state.fields_cache["user"] = user

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_OPERATION_STATUSES

    @property
    def is_large(self) -> bool:
        return self.selection is not None


class OperationSlice(models.Model):
    """One range of a large operation's selection, in session-id order: the sessions
    with ``after < id <= through`` (an empty bound: open). One worker at a time claims
    it (``claimed_by``, kept alive by ``heartbeat_at``; a claim whose heartbeat is
    older than ``BULKOPS_STALE_AFTER_SECONDS`` may be taken over); each chunk moves
    ``cursor`` (the last session id it processed) in the chunk's own transaction, so a
    resumed slice starts right after the last committed chunk and no session is acted
    on twice."""

    operation = models.ForeignKey(
        BulkOperation, on_delete=models.CASCADE, related_name="slices", db_index=False
    )
    number = models.PositiveIntegerField()
    after = models.CharField(max_length=64, blank=True, default="")
    through = models.CharField(max_length=64, blank=True, default="")
    cursor = models.CharField(max_length=64, blank=True, default="")
    done = models.BooleanField(default=False)
    #: The worker running it ("": nobody).
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["operation", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation", "number"], name="slice_unique_number_per_operation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation_id} slice {self.number}"


class OperationChunk(models.Model):
    """What one committed chunk of a large operation did, without a row per session:
    the session id range it covered (``first_id`` … ``last_id``), the sessions the
    action was applied to (``session_ids``, in id order) with the status each had just
    before (``previous_statuses``, same order: what undo restores), the sessions it
    skipped with their reasons (two arrays as well: a handful of reason codes), and how
    many it applied, skipped and failed. Failed sessions keep a ``BulkOperationItem``
    each (what a retry takes); every such item lies within its chunk's range, and the
    ranges of an operation's chunks never overlap (``bulkops.itemstore`` reads them
    back as items)."""

    operation = models.ForeignKey(
        BulkOperation, on_delete=models.CASCADE, related_name="chunks", db_index=False
    )
    first_id = models.CharField(max_length=64)
    last_id = models.CharField(max_length=64)
    session_ids = ArrayField(models.TextField(), default=list)
    previous_statuses = ArrayField(models.TextField(), default=list)
    #: The sessions it skipped (already in the target state) and each one's reason.
    skipped_ids = ArrayField(models.TextField(), default=list)
    skipped_reasons = ArrayField(models.TextField(), default=list)
    #: How many ``session_ids`` holds (read without unpacking the array).
    succeeded = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["operation", "first_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation", "first_id"], name="chunk_unique_start_per_operation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation_id} {self.first_id}…{self.last_id}"


class ItemOutcome(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Succeeded")
    SKIPPED = "skipped", _("Skipped")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class BulkOperationItem(models.Model):
    """One targeted session id. Not a foreign key: the id may not exist, may belong to
    someone else, or may be gone after a hard delete; the item keeps the record."""

    # No index of its own: the unique (operation, session_id) constraint leads with it.
    operation = models.ForeignKey(
        BulkOperation, on_delete=models.CASCADE, related_name="items", db_index=False
    )
    session_id = models.CharField(max_length=64)
    outcome = models.CharField(
        max_length=16, choices=ItemOutcome.choices, default=ItemOutcome.PENDING
    )
    reason = models.CharField(max_length=32, blank=True, default="")
    message = models.CharField(max_length=255, blank=True, default="")
    #: The session's status just before the action applied to it (what undo restores).
    previous_status = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        ordering = ["session_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation", "session_id"], name="item_unique_session_per_operation"
            ),
        ]
        # Deliberately no index on outcome: the worker finds the next pending items
        # through the unique (operation, session_id) index, and with outcome in no
        # index (not even a partial index's condition) PostgreSQL can write each
        # outcome in place (a HOT update; the table keeps free room per page, see
        # migration 0003), about 2.5x faster than with an outcome index.

    def __str__(self) -> str:
        return f"{self.session_id}: {self.outcome}"
