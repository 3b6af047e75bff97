"""The options a staff user picks on an admin bulk action's confirmation page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from bulkops.models import ExportFormat
from bulkops.services import MAX_REASON_LENGTH

#: Hidden marker: the POST comes from the confirmation page (bind the form to it), not
#: from the changelist's action bar (show the defaults).
CONFIRM_FORM_MARKER = "_bulk_confirm"


class BulkActionForm(forms.Form):
    """Reason for the audit, plus the parameters the action takes (DESIGN §5 bodies).

    Only the fields of the action at hand are kept: ``BulkActionForm(action_type=…)``.
    """

    format = forms.ChoiceField(
        label=_("Format"),
        choices=ExportFormat.choices,
        widget=forms.RadioSelect,
        initial=ExportFormat.CSV,
    )
    include_details = forms.BooleanField(
        label=_("Include details (content size, exports, close/archive/delete times)"),
        required=False,
    )
    cascade_exports = forms.BooleanField(
        label=_("Also delete the sessions' exports"),
        required=False,
    )
    atomic = forms.BooleanField(
        label=_("All or nothing: if one session fails, change none"),
        required=False,
    )
    reason = forms.CharField(
        label=_("Reason (kept with the operation for the audit)"),
        required=False,
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "maxlength": MAX_REASON_LENGTH}),
    )

    FIELDS_BY_ACTION = {
        "close": ("atomic", "reason"),
        "archive": ("atomic", "reason"),
        "delete": ("cascade_exports", "atomic", "reason"),
        "restore": ("reason",),
        "export": ("format", "include_details", "reason"),
    }

    def __init__(self, *args: Any, action_type: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep = self.FIELDS_BY_ACTION.get(action_type, ("reason",))
        for name in list(self.fields):
            if name not in keep:
                del self.fields[name]

    def action_params(self) -> dict[str, Any]:
        """The chosen parameters (the defaults while the form is unbound or invalid)."""
        if self.is_bound and self.is_valid():
            data = self.cleaned_data
        else:
            data = {name: self.get_initial_for_field(f, name) for name, f in self.fields.items()}
        params = {name: data[name] for name in self.fields if name != "reason"}
        for name in ("include_details", "cascade_exports", "atomic"):
            if name in params:
                params[name] = bool(params[name])
        return params

    def audit_reason(self) -> str:
        return self.cleaned_data.get("reason", "") if self.is_valid() else ""
