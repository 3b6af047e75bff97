"""What the admin's confirmation pages share — a bulk action's, *Retry failed items*'
and *Undo*'s: the partition as the page lists it, the "run on" choice, what is left of
the user's limits, and the one token per page that makes Confirm idempotent.

**Run on.** By default Confirm runs on the eligible sessions only (what an API client
does: validate, then act on ``eligible_ids``): what the page showed as skipped or not
eligible is left out and recorded with the operation as *left out as previewed*
(``BulkOperation.excluded``), so a run that did what the page said ends ``completed``,
and its failures are only the unexpected ones. "Every selected session" records them as
items instead (failed with their reason, or skipped), as the API does.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bulkops.actions import reasons
from bulkops.conf import bulkops_settings
from bulkops.engine import SAMPLES_PER_REASON, operation_validate
from bulkops.exceptions import (
    RateLimited,
    SelectionConflict,
    SelectionDrift,
    SelectionTokenExpired,
    SelectionTokenInvalid,
)
from bulkops.ratelimits import VALIDATE, rate_limit, rate_limit_left
from bulkops.selectors import active_operations_count

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.db.models import QuerySet
    from django.http import HttpRequest, HttpResponse

    from bulkops.engine import Selection, ValidationResult
    from bulkops.models import Session

#: Rows listed per partition on the confirmation page; the counts are always complete.
LISTED_PER_PARTITION = 100
#: One random token per confirmation page, used as the operation's idempotency key.
CONFIRM_TOKEN = "_bulk_token"
CONFIRM_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: The page's ``selection_token`` (validate's): Confirm runs only what the page showed.
SELECTION_TOKEN = "_bulk_selection_token"
#: Eligible titles the confirmation page names in its summary ("and N more").
SAMPLE_TITLES = 10
#: The "run on" choice: absent or anything else means the eligible sessions only.
RUN_ON, RUN_ON_ALL = "run_on", "all"
#: A page shown without a refused Confirm: nothing to explain.
NO_NOTICES: Mapping[str, str] = MappingProxyType({"drift_notice": "", "refusal_notice": ""})


def confirm(start: Callable[[], HttpResponse]) -> tuple[HttpResponse | None, Mapping[str, str]]:
    """The second pass: ``start()``'s answer; or, when Confirm started nothing because
    the selection drifted since the page was shown or a limit (a rate limit, the
    active-operations cap) refused it, None and why — the page is then shown again with
    the new preview, the selection, options and reason kept."""
    try:
        return start(), NO_NOTICES
    except (SelectionConflict, SelectionTokenInvalid) as exc:
        return None, {**NO_NOTICES, "drift_notice": drift_notice(exc)}
    except RateLimited as exc:
        return None, {**NO_NOTICES, "refusal_notice": refusal_notice(exc)}


def preview(
    request: HttpRequest, *, action: str, selection: Selection, params: dict[str, Any]
) -> ValidationResult:
    """The first pass: the partition the page shows (``operation_validate``: nothing
    changes), counted against the user's validate rate limit."""
    with rate_limit(user=request.user, scope=VALIDATE):
        return operation_validate(
            user=request.user, action=action, selection=selection, params=params
        )


def page_context(modeladmin: ModelAdmin, request: HttpRequest) -> dict[str, Any]:
    """What every confirmation page's context starts with (the admin site's, and a fresh
    Confirm token: one per page); the request is bound to the admin site."""
    request.current_app = modeladmin.admin_site.name
    return {
        **modeladmin.admin_site.each_context(request),
        "subtitle": None,
        "opts": modeladmin.opts,
        "confirm_token": secrets.token_urlsafe(24),
        "media": modeladmin.media,
    }


def confirm_key(request: HttpRequest) -> str | None:
    """The idempotency key of this confirmation page's Confirm (one token per page)."""
    token = request.POST.get(CONFIRM_TOKEN, "")
    return f"admin-confirm:{token}" if CONFIRM_TOKEN_RE.fullmatch(token) else None


def runs_on_eligible_only(request: HttpRequest) -> bool:
    """Whether Confirm leaves out what the page previewed as skipped or not eligible."""
    return request.POST.get(RUN_ON) != RUN_ON_ALL


def limits_context(request: HttpRequest, scope: str) -> dict[str, Any]:
    """What is left of the user's rate limit for ``scope`` (None: not limited) and of
    their active-operations cap, shown before Confirm rather than found after it."""
    return {
        "rate_left": rate_limit_left(user=request.user, scope=scope),
        "rate_scope": scope,
        "active_count": active_operations_count(user=request.user),
        "active_cap": bulkops_settings.MAX_ACTIVE_OPERATIONS_PER_USER,
        "run_on_all": not runs_on_eligible_only(request),
    }


def refusal_notice(exc: RateLimited) -> str:
    """Why Confirm started nothing (a rate limit, the active-operations cap), for the
    re-rendered page that keeps the selection, the options and the reason."""
    return _(
        "Nothing was done: %(why)s The selection, options and reason below are kept: "
        "confirm again when the limit allows."
    ) % {"why": exc.message}


def drift_notice(exc: SelectionConflict | SelectionTokenInvalid) -> str:
    """Why Confirm started nothing, for the re-rendered confirmation page."""
    if isinstance(exc, SelectionDrift):
        return _(
            "Nothing was done: the selection changed after you reviewed it — "
            "%(then)s then, %(now)s now. Review the updated preview below and confirm again."
        ) % {
            "then": describe_counts(exc.previous),
            "now": describe_counts(exc.current),
        }
    if isinstance(exc, SelectionTokenExpired):
        return _(
            "Nothing was done: this confirmation page was too old to trust. Review the "
            "updated preview below and confirm again."
        )
    return _(
        "Nothing was done: the options changed, or the page could not be verified. "
        "Review the updated preview below and confirm again."
    )


def describe_counts(counts: dict[str, int]) -> str:
    return ngettext(
        "%(eligible)d eligible of %(total)d session",
        "%(eligible)d eligible of %(total)d sessions",
        counts["total"],
    ) % {"eligible": counts["eligible_count"], "total": counts["total"]}


def _grouped(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts = Counter(item["reason"] for item in items)
    return [
        {"reason": reason, "message": reasons.message_for(reason), "count": n}
        for reason, n in counts.most_common()
    ]


def _counted_groups(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Past the cap, the reasons of ``kind`` (``skipped`` / ``ineligible``) with their
    counts from SQL (``counts_by_reason``): the lists are samples, and every reason
    counted has at least one sample, which says its kind."""
    kinds = {item["reason"] for item in data[kind]}
    return sorted(
        (
            {"reason": reason, "message": reasons.message_for(reason), "count": n}
            for reason, n in data["counts_by_reason"].items()
            if reason in kinds
        ),
        key=lambda group: -group["count"],
    )


def confirmation_context(
    request: HttpRequest,
    queryset: QuerySet[Session],
    result: ValidationResult,
    selection: Selection,
    count: int,
) -> dict[str, Any]:
    """The partition as the template lists it: counts, reasons, the first rows of each.
    Past the cap (``lists_truncated``) the counts are validate's, from SQL, and the rows
    are its samples (at most ``SAMPLES_PER_REASON`` a reason): never a table of every
    matching session."""
    data = result.as_dict()
    large = data["lists_truncated"]
    group = _counted_groups if large else lambda data, kind: _grouped(data[kind])
    shown_skipped = data["skipped"][:LISTED_PER_PARTITION]
    shown_ineligible = data["ineligible"][:LISTED_PER_PARTITION]
    listed = [i["session_id"] for i in shown_skipped + shown_ineligible]
    titles = dict(queryset.filter(pk__in=listed).values_list("pk", "title"))
    for item in shown_skipped + shown_ineligible:
        item["title"] = titles.get(item["session_id"], "")
        item.setdefault("message", reasons.message_for(item["reason"]))
    sample = data["eligible"][:SAMPLE_TITLES]
    return {
        "result": data,
        "sample_titles": [row["title"] or row["session_id"] for row in sample],
        "sample_more": data["eligible_count"] - len(sample),
        "selected_count": count,
        "left_out_count": data["skipped_count"] + data["ineligible_count"],
        "selection_filter": selection.filter,
        "eligible_rows": data["eligible"][:LISTED_PER_PARTITION],
        "skipped_rows": shown_skipped,
        "ineligible_rows": shown_ineligible,
        "skipped_groups": group(data, "skipped"),
        "ineligible_groups": group(data, "ineligible"),
        "listed_limit": LISTED_PER_PARTITION,
        "large": large,
        "samples_per_reason": SAMPLES_PER_REASON,
        "cascade": data.get("cascade"),
        "changelist_url": request.get_full_path(),
        "run_on_name": RUN_ON,
        "confirm_token_name": CONFIRM_TOKEN,
    }
