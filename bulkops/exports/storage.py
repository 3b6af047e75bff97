"""Where export files live and how they come and go, apart from what goes in them
(``actions.export``): their names and expiry, the ``.part`` file written chunk by
chunk and renamed into place only when complete (a download never sees half a file),
the one rule every download answers by (``file_state``), and what cleanup removes.

Below the engine and the interfaces: the export action writes through it, cleanup
deletes through it, and the API, the admin and the ``bulk`` command read through it.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from django.utils import timezone

from bulkops.conf import bulkops_settings
from bulkops.exceptions import ExportFileError

if TYPE_CHECKING:
    from bulkops.models import BulkOperation

FILENAME_TEMPLATE = "session_export_{date:%Y%m%d}_{operation_id}.{ext}"
PART_SUFFIX = ".part"
#: A ``.part`` file untouched this long belongs to an export interrupted for good.
PART_FILE_MAX_AGE = datetime.timedelta(days=1)


def export_dir() -> Path:
    return Path(bulkops_settings.EXPORT_DIR)


def export_path(filename: str) -> Path:
    return export_dir() / filename


def export_filename(*, created_at: datetime.datetime, operation_id: str, ext: str) -> str:
    """The file name of an operation's export (what its download URL names)."""
    return FILENAME_TEMPLATE.format(date=created_at, operation_id=operation_id, ext=ext)


def export_expiry(created_at: datetime.datetime) -> datetime.datetime:
    """When an export started at ``created_at`` expires (``BULKOPS_EXPORT_RETENTION_SECONDS``)."""
    return created_at + datetime.timedelta(seconds=bulkops_settings.EXPORT_RETENTION_SECONDS)


def file_state(operation: BulkOperation) -> str:
    """``ready``, ``expired``, ``pending`` (still being written) or ``missing``: the one
    rule the API's, the admin's and the ``bulk`` command's downloads answer by."""
    if operation.expires_at is not None and operation.expires_at <= timezone.now():
        return "expired"
    if not operation.is_finished:
        return "pending"
    if operation.status not in ("completed", "partial") or not operation.export_file:
        return "missing"
    return "ready" if export_path(operation.export_file).is_file() else "missing"


def writes_file(method: Callable) -> Callable:
    """An ``OSError`` writing the file becomes ``ExportFileError`` with the reason
    (``No space left on device``), not the path: the operation's ``error`` is shown."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            raise ExportFileError(
                f"Could not write the export file: {exc.strerror or type(exc).__name__}"
            ) from exc

    return wrapper


def part_path(filename: str) -> Path:
    return export_path(filename + PART_SUFFIX)


def open_part(filename: str, *, fresh: bool) -> IO[str]:
    """The ``.part`` file of ``filename`` as text: ``fresh`` starts it afresh (creating
    the directory), otherwise it is appended to."""
    if fresh:
        export_dir().mkdir(parents=True, exist_ok=True)
    return open(part_path(filename), "w" if fresh else "a", encoding="utf-8", newline="")


def sync(fh: IO[str]) -> None:
    """Make what was written durable before the chunk's transaction commits."""
    fh.flush()
    os.fsync(fh.fileno())


def publish_part(filename: str) -> None:
    """Rename the complete ``.part`` file into place, atomically."""
    os.replace(part_path(filename), export_path(filename))


def discard_part(filename: str) -> None:
    part_path(filename).unlink(missing_ok=True)


def stale_files(*, names: Iterable[str], now: datetime.datetime) -> list[Path]:
    """The existing files of the exports ``names``, and the ``.part`` files untouched
    for ``PART_FILE_MAX_AGE`` (their export was interrupted for good)."""
    files = [export_path(name) for name in names]
    if export_dir().is_dir():
        horizon = (now - PART_FILE_MAX_AGE).timestamp()
        files += [p for p in export_dir().glob("*" + PART_SUFFIX) if p.stat().st_mtime < horizon]
    return [path for path in files if path.is_file()]


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
