"""The options a staff user picks on an admin bulk action's confirmation page,
generated from the action's ``params_spec`` (plus the failure threshold and the audit
reason every action takes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.utils.translation import gettext_lazy as _

from bulkops.actions.base import REASON_LABEL, Param
from bulkops.engine import MAX_FAILURES
from bulkops.models import MAX_REASON_LENGTH

if TYPE_CHECKING:
    from bulkops.actions.base import BulkAction

#: Hidden marker: the POST comes from the confirmation page (bind the form to it), not
#: from the changelist's action bar (show the defaults).
CONFIRM_FORM_MARKER = "_bulk_confirm"


def param_form_field(param: Param, *, initial: Any) -> forms.Field:
    """The form field of one action parameter."""
    if param.is_bool:
        return forms.BooleanField(label=_(param.label), required=False, initial=initial)
    return forms.ChoiceField(
        label=_(param.label),
        choices=[(choice, choice.upper()) for choice in param.choices],
        widget=forms.RadioSelect,
        initial=initial,
    )


class BulkActionForm(forms.Form):
    """The action's parameters the admin shows (``Param.in_admin_form``), then the
    failure threshold and the reason. ``fixed`` are the admin action's own parameters
    (e.g. ``format`` of *Export as JSON*): they are the fields' initial values."""

    max_failures = forms.IntegerField(
        label=_("Stop after more than this many failures"),
        help_text=_(
            "The rest of the sessions then end cancelled. Empty: never stop; 0: stop at "
            "the first failure."
        ),
        required=False,
        min_value=MAX_FAILURES.minimum,
        max_value=MAX_FAILURES.maximum,
    )
    reason = forms.CharField(
        label=_(REASON_LABEL),
        required=False,
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "maxlength": MAX_REASON_LENGTH}),
    )

    def __init__(
        self, *args: Any, action: type[BulkAction], fixed: dict[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        params = {
            name: param_form_field(param, initial=fixed.get(name, param.default))
            for name, param in action.params_spec.items()
            if param.in_admin_form
        }
        # A threshold means little where nothing is changed (export: only a missing or
        # deleted session fails), so read-only actions are not offered one.
        common = ("reason",) if action.read_only else ("max_failures", "reason")
        self.fields = {**params, **{name: self.fields[name] for name in common}}
        self.param_specs = {name: action.params_spec[name] for name in params}

    def action_params(self) -> dict[str, Any]:
        """The chosen parameters (the defaults while the form is unbound or invalid)."""
        if self.is_bound and self.is_valid():
            data = self.cleaned_data
        else:
            data = {name: self.get_initial_for_field(f, name) for name, f in self.fields.items()}
        return {
            name: bool(data[name]) if spec.is_bool else data[name]
            for name, spec in self.param_specs.items()
        }

    def failure_threshold(self) -> int | None:
        """``max_failures`` (None: no threshold, also while the form is invalid or the
        action is offered none)."""
        return self.cleaned_data.get("max_failures") if self.is_valid() else None

    def audit_reason(self) -> str:
        return self.cleaned_data.get("reason", "") if self.is_valid() else ""
