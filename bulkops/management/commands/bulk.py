"""Operators' bulk actions from the command line, through the same services as the API."""

import json
import sys
import time

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.urls import reverse

from bulkops.actions import get_action, selectable_actions
from bulkops.actions.base import Param
from bulkops.actions.export import export_path, file_state
from bulkops.engine import Selection, operation_create, operation_undo
from bulkops.exceptions import BulkOpsError
from bulkops.models import BulkOperation, ItemOutcome, OperationSource
from bulkops.representations import eta_seconds, progress_percent, rate_per_second
from bulkops.selectors import operation_get_for_user

BAR_WIDTH = 30


def _parse_filter(pairs: list[str]) -> dict:
    result: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--filter takes key=value, got {pair!r}.")
        if value.lower() in ("true", "false"):
            result[key] = value.lower() == "true"
        elif "," in value and key == "status":
            result[key] = value.split(",")
        else:
            result[key] = value
    return result


def _option(name: str, param: Param) -> tuple[str, dict]:
    """The ``bulk`` option of one action parameter, generated from its ``Param``."""
    flag = "--" + name.replace("_", "-")
    if not param.is_bool:
        return flag, {"choices": list(param.choices), "default": None, "help": param.label}
    if param.default:
        flag = param.cli_flag or f"--no-{name.replace('_', '-')}"
        return flag, {"action": "store_false", "default": None, "help": param.label}
    return flag, {"action": "store_true", "default": None, "help": param.label}


def action_options() -> dict[str, tuple[str, dict, list[str]]]:
    """Every parameter of every registered action: name -> (flag, argparse kwargs, the
    actions that take it). One flag per parameter name, shared by the actions."""
    options: dict[str, tuple[str, dict, list[str]]] = {}
    for action_type, action in selectable_actions().items():
        for name, param in action.params_spec.items():
            if name not in options:
                options[name] = (*_option(name, param), [])
            options[name][2].append(action_type)
    return options


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


UNDO = "undo"


class Command(BaseCommand):
    help = (
        "Start a bulk operation (and with --wait, watch it run to the end); "
        "`bulk undo <operation id> --user …` undoes a finished one."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=[*selectable_actions(), UNDO])
        parser.add_argument(
            "operation_id", nargs="?", help="undo only: the operation to undo (the user's own)."
        )
        parser.add_argument("--user", required=True, help="Username the operation runs as.")
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--ids", nargs="+", metavar="ID", help="Session ids.")
        target.add_argument(
            "--filter",
            nargs="+",
            metavar="KEY=VALUE",
            help="Select all that match: status, search, created_after, "
            "created_before, owner, deleted.",
        )
        for name, (flag, kwargs, used_by) in action_options().items():
            help_text = f"{', '.join(used_by)}: {kwargs.pop('help')}"
            parser.add_argument(flag, dest=name, help=help_text, **kwargs)
        parser.add_argument("--reason", default="", help="Free text kept for the audit.")
        parser.add_argument(
            "--wait", action="store_true", help="Show a progress bar until the operation finishes."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=900.0,
            help="With --wait: give up waiting after this many seconds.",
        )

    def handle(self, *args, **opts):
        try:
            user = get_user_model().objects.get(username=opts["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {opts['user']!r}.") from None
        try:
            op = self.undo(user, opts) if opts["action"] == UNDO else self.create(user, opts)
        except ValidationError as exc:
            raise CommandError(_error_text(exc)) from None
        except BulkOpsError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Operation {op.pk}: {op.action} of {op.total} sessions ({op.status}).")
        if not opts["wait"]:
            self.stdout.write(f"Follow it with: GET /api/bulk/operations/{op.pk}/status")
            return
        op = self.watch(op, timeout=opts["timeout"])
        self.summary(op)
        if op.status not in ("completed", "partial"):
            sys.exit(1)

    def undo(self, user, opts) -> BulkOperation:
        """``bulk undo <operation id>``: the user's own finished operation."""
        if not opts["operation_id"] or opts["ids"] or opts["filter"]:
            raise CommandError("Usage: bulk undo <operation id> --user <username> [--wait].")
        given = [name for name in action_options() if opts.get(name) is not None]
        if given:
            raise CommandError(f"undo does not take {action_options()[given[0]][0]}.")
        operation = operation_get_for_user(user=user, operation_id=opts["operation_id"])
        return operation_undo(operation=operation, user=user, source=OperationSource.CLI)

    def create(self, user, opts) -> BulkOperation:
        """``bulk <action> --ids … | --filter …``."""
        if opts["operation_id"] or not (opts["ids"] or opts["filter"]):
            raise CommandError("Give exactly one of --ids or --filter.")
        action = opts["action"]
        spec = get_action(action).params_spec
        given = {name: opts[name] for name in action_options() if opts.get(name) is not None}
        unused = sorted(set(given) - set(spec))
        if unused:
            flags = ", ".join(action_options()[name][0] for name in unused)
            raise CommandError(f"{action} does not take {flags}.")
        params = {name: given.get(name, param.default) for name, param in spec.items()}
        selection = (
            Selection(session_ids=opts["ids"])
            if opts["ids"]
            else Selection(filter=_parse_filter(opts["filter"]))
        )
        return operation_create(
            user=user,
            action=action,
            selection=selection,
            params=params,
            source=OperationSource.CLI,
            reason=opts["reason"],
        )

    def watch(self, op: BulkOperation, *, timeout: float) -> BulkOperation:
        started = time.monotonic()
        hinted = False
        while True:
            op.refresh_from_db()
            self.draw(op)
            if op.is_finished:
                self.stdout.write("")
                return op
            waited = time.monotonic() - started
            if op.status == "pending" and waited > 10 and not hinted:
                hinted = True
                self.stderr.write(
                    "\nStill pending after 10 s: is a worker running? "
                    "(python manage.py serve, or python manage.py db_worker)"
                )
            if waited > timeout:
                raise CommandError(
                    f"Gave up waiting after {timeout:.0f} s; {op.pk} is {op.status}."
                )
            time.sleep(0.1)

    def draw(self, op: BulkOperation) -> None:
        percent = progress_percent(op)
        filled = percent * BAR_WIDTH // 100
        rate = rate_per_second(op) or 0.0
        eta = eta_seconds(op) or 0.0
        line = (
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f}% "
            f"{op.processed}/{op.total}  ok {op.succeeded}  skipped {op.skipped}  "
            f"failed {op.failed}  {rate:,.0f}/s  ETA {eta:.1f}s  {op.status:<9}"
        )
        self.stdout.write(line, ending="")
        self.stdout.flush()

    def summary(self, op: BulkOperation) -> None:
        self.stdout.write(
            f"{op.status}: {op.succeeded} succeeded, {op.skipped} skipped, {op.failed} failed, "
            f"{op.cancelled} cancelled of {op.total}."
        )
        if op.error:
            self.stdout.write(f"Error: {op.error}")
        reasons: dict[str, int] = {}
        for reason in op.items.filter(outcome__in=["failed", "skipped"]).values_list(
            "reason", flat=True
        ):
            reasons[reason] = reasons.get(reason, 0) + 1
        if reasons:
            self.stdout.write("Reasons: " + json.dumps(reasons, sort_keys=True))
        failed = (
            op.items.filter(outcome=ItemOutcome.FAILED)
            .values_list("reason")
            .annotate(n=Count("id"))
            .order_by("-n", "reason")
        )
        for reason, n in failed:
            self.stdout.write(f"  failed {reason}: {n}")
        report = reverse("bulkops-api:operation-report", args=[op.pk])
        self.stdout.write(f"Report: GET {report}?format=csv (add &outcome=failed for failures)")
        if get_action(op.action).produces_file and file_state(op) == "ready":
            self.stdout.write(f"File: {export_path(op.export_file).resolve()}")
