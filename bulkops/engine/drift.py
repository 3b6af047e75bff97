"""The selection drift check: act on exactly what was previewed.

``operation_validate`` answers a ``selection_token``: signed (``django.core.signing``,
a salt of its own), short-lived (``BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS``), binding
the user, the action and the parameters that change eligibility (delete's
``soft_delete``, ``cascade_exports``), a digest of the partition — every resolved id,
sorted, with the part it fell in (eligible, skipped, not eligible) — and the counts.
Compact: a digest, never the ids. Past the cap (a large selection) the digest binds the
filter and the counts by part and reason instead (``engine.large.counts``).

An action given the token recomputes the partition of its selection and starts only
when the digest is the same: the same ids (a filter can match new or fewer sessions)
*and* each in the same part (a session that became ``processing``, or was closed
meanwhile, is drift too) — what the person confirmed is what runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.utils.translation import ngettext

from bulkops.conf import bulkops_settings
from bulkops.engine.eligibility import Partition, partition, selection_rows
from bulkops.exceptions import SelectionDrift, SelectionTokenExpired, SelectionTokenInvalid

if TYPE_CHECKING:
    from bulkops.actions.base import BulkAction

SALT = "bulkops.engine.drift.selection-token"
#: The part of the partition each id fell in, as the digest spells it.
ELIGIBLE, SKIPPED, INELIGIBLE = "e", "s", "i"


@dataclass(frozen=True)
class SelectionSnapshot:
    """What validate saw: the digest of the partition, and its counts."""

    digest: str
    total: int
    eligible_count: int
    skipped_count: int
    ineligible_count: int

    @classmethod
    def of(cls, *, ids: list[str], part: Partition) -> SelectionSnapshot:
        parts = dict.fromkeys(part.eligible, ELIGIBLE)
        parts |= {sid: SKIPPED for sids in part.skipped.values() for sid in sids}
        parts |= {sid: INELIGIBLE for sids in part.failed.values() for sid in sids}
        canonical = "".join(f"{sid}\t{parts[sid]}\n" for sid in sorted(ids))
        return cls(
            digest=hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest(),
            total=len(ids),
            eligible_count=len(part.eligible),
            skipped_count=part.skipped_count,
            ineligible_count=part.failed_count,
        )

    def counts(self) -> dict[str, int]:
        data = asdict(self)
        del data["digest"]
        return data

    def describe(self) -> str:
        return ngettext(
            "%(total)d session (%(eligible)d eligible, %(skipped)d skipped, "
            "%(ineligible)d not eligible)",
            "%(total)d sessions (%(eligible)d eligible, %(skipped)d skipped, "
            "%(ineligible)d not eligible)",
            self.total,
        ) % {
            "total": self.total,
            "eligible": self.eligible_count,
            "skipped": self.skipped_count,
            "ineligible": self.ineligible_count,
        }


def eligibility_params(action: BulkAction) -> dict[str, Any]:
    """The action's parameters that change which sessions are eligible."""
    return {
        name: action.params.get(name)
        for name, spec in action.params_spec.items()
        if spec.affects_eligibility
    }


def selection_token_issue(*, action: BulkAction, snapshot: SelectionSnapshot) -> str:
    """The signed token of ``snapshot`` for ``action``'s user, type and parameters."""
    payload = {
        "u": str(action.user.pk),
        "a": action.action_type,
        "p": eligibility_params(action),
        "h": snapshot.digest,
        "n": [
            snapshot.total,
            snapshot.eligible_count,
            snapshot.skipped_count,
            snapshot.ineligible_count,
        ],
    }
    return signing.dumps(payload, salt=SALT, compress=True)


def _load(token: str) -> dict[str, Any]:
    max_age = bulkops_settings.SELECTION_TOKEN_MAX_AGE_SECONDS
    try:
        payload = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise SelectionTokenExpired(
            f"The selection_token has expired (it is valid for {max_age} s): validate "
            "again, and confirm the new counts."
        ) from None
    except (signing.BadSignature, ValueError, TypeError):
        # BadSignature: tampered or not ours; the others: a signed blob that is not JSON.
        payload = None
    if not isinstance(payload, dict):
        raise SelectionTokenInvalid("Not a selection_token issued by validate (or altered).")
    return payload


def selection_token_verify(*, token: str, action: BulkAction) -> SelectionSnapshot:
    """The snapshot ``token`` binds, when it was issued to ``action``'s user for this
    action and these eligibility parameters; raise SelectionTokenInvalid (400) when it
    was not (or is garbage), SelectionTokenExpired (409) when it is too old."""
    payload = _load(token)
    try:
        user, action_type, params = payload["u"], payload["a"], payload["p"]
        digest, counts = payload["h"], payload["n"]
        snapshot = SelectionSnapshot(str(digest), *(int(n) for n in counts))
    except (KeyError, TypeError, ValueError):
        raise SelectionTokenInvalid("Not a selection_token issued by validate.") from None
    if user != str(action.user.pk):
        raise SelectionTokenInvalid("This selection_token was issued to another user.")
    if action_type != action.action_type:
        raise SelectionTokenInvalid(
            f"This selection_token was issued for {action_type}, not {action.action_type}."
        )
    if params != eligibility_params(action):
        raise SelectionTokenInvalid(
            f"This selection_token was issued with other options ({params}); validate "
            "again with the options you send."
        )
    return snapshot


def selection_drift_check(
    *,
    expected: SelectionSnapshot,
    action: BulkAction,
    ids: list[str],
    part: Partition | None = None,
) -> None:
    """Raise SelectionDrift when ``ids`` no longer partition as ``expected`` says (other
    ids, or an id now in another part); read without locks (or ``part``, their
    partition just read): the worker re-checks each session under lock anyway."""
    if part is None:
        part = partition(action=action, ids=ids, rows=selection_rows(action=action, ids=ids))
    snapshot_compare(expected=expected, current=SelectionSnapshot.of(ids=ids, part=part))


def snapshot_compare(*, expected: SelectionSnapshot, current: SelectionSnapshot) -> None:
    """Raise SelectionDrift, with both counts, unless ``current`` is what was validated."""
    if current.digest == expected.digest:
        return
    raise SelectionDrift(
        f"The selection changed since it was validated: {expected.describe()} then, "
        f"{current.describe()} now. Nothing was started: validate again and confirm the "
        "new counts.",
        previous=expected.counts(),
        current=current.counts(),
    )
