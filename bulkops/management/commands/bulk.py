"""Operators' bulk actions from the command line, through the same services as the API.

``bulk <action> --user U --ids …|--filter …`` starts an operation (``--wait`` watches
it); ``bulk pause <operation id>`` and ``bulk resume <operation id>`` pause and resume
one (an operator's command: any user's operation); ``bulk undo <operation id> --user U``
undoes a finished one of that user's.
"""

import argparse
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
from bulkops.engine import (
    MAX_FAILURES_LIMIT,
    Selection,
    operation_create,
    operation_pause,
    operation_resume,
    operation_undo,
)
from bulkops.exceptions import BulkOpsError
from bulkops.models import BulkOperation, ItemOutcome, OperationSource, OperationStatus
from bulkops.representations import eta_seconds, progress_percent, rate_per_second
from bulkops.selectors import operation_get_for_user

BAR_WIDTH = 30
#: ``bulk pause|resume <operation id>``: the operation commands beside the actions.
CONTROLS = ("pause", "resume")
#: ``bulk undo <operation id> --user U``: a new operation undoing a finished one.
UNDO = "undo"
#: The exit status of ``--wait`` when the operation was paused (1: it did not complete).
EXIT_PAUSED = 3


def _max_failures(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_FAILURES_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_FAILURES_LIMIT}")
    return value


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


class Command(BaseCommand):
    help = (
        "Start a bulk operation (and with --wait, watch it run to the end), or pause or "
        "resume one: bulk pause|resume <operation id>, or undo a finished one: "
        "bulk undo <operation id> --user U."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=[*selectable_actions(), *CONTROLS, UNDO])
        parser.add_argument(
            "operation", nargs="?", help="pause / resume / undo: the operation id (op-…)."
        )
        parser.add_argument("--user", help="Username the operation runs as (actions, undo).")
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
            "--max-failures",
            type=_max_failures,
            default=None,
            metavar="N",
            help="Stop once more than N sessions have failed (0: at the first failure); "
            "the rest end cancelled (failure_threshold) and the operation failed.",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Show a progress bar until the operation finishes (or is paused: "
            f"then exit with status {EXIT_PAUSED}).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=900.0,
            help="With --wait: give up waiting after this many seconds.",
        )

    def handle(self, *args, **opts):
        if opts["action"] in CONTROLS:
            op = self.control(opts["action"], opts["operation"])
        elif opts["action"] == UNDO:
            op = self.undo(opts)
        else:
            op = self.start(opts)
        if not opts["wait"]:
            self.stdout.write(f"Follow it with: GET /api/bulk/operations/{op.pk}/status")
            return
        op = self.watch(op, timeout=opts["timeout"])
        self.summary(op)
        if op.status == OperationStatus.PAUSED:
            self.stdout.write(f"Paused. Resume it with: manage.py bulk resume {op.pk}")
            sys.exit(EXIT_PAUSED)
        if op.status not in ("completed", "partial"):
            sys.exit(1)

    def control(self, verb: str, operation_id: str | None) -> BulkOperation:
        """``bulk pause|resume <operation id>``."""
        op = BulkOperation.objects.filter(pk=operation_id or "").first()
        if op is None:
            raise CommandError(f"bulk {verb} needs an existing operation id (op-…).")
        service = operation_pause if verb == "pause" else operation_resume
        try:
            op = service(operation=op)
        except BulkOpsError as exc:
            raise CommandError(exc.message) from None
        pausing = " (pausing after the current chunk)" if op.pause_requested else ""
        self.stdout.write(f"Operation {op.pk}: {op.status}{pausing}.")
        return op

    def user(self, opts: dict):
        try:
            return get_user_model().objects.get(username=opts["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {opts['user']!r}.") from None

    def undo(self, opts: dict) -> BulkOperation:
        """``bulk undo <operation id> --user U``: the user's own finished operation."""
        if not opts["operation"] or not opts["user"] or opts["ids"] or opts["filter"]:
            raise CommandError("Usage: bulk undo <operation id> --user <username> [--wait].")
        given = [name for name in action_options() if opts.get(name) is not None]
        if given:
            raise CommandError(f"undo does not take {action_options()[given[0]][0]}.")
        user = self.user(opts)
        try:
            operation = operation_get_for_user(user=user, operation_id=opts["operation"])
            op = operation_undo(operation=operation, user=user, source=OperationSource.CLI)
        except BulkOpsError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Operation {op.pk}: {op.action} of {op.total} sessions ({op.status}).")
        return op

    def start(self, opts: dict) -> BulkOperation:
        """``bulk <action> --user U --ids …|--filter …``: create the operation."""
        if opts["operation"] or not opts["user"] or not (opts["ids"] or opts["filter"]):
            raise CommandError(
                f"bulk {opts['action']} takes --user and one of --ids or --filter "
                "(and no operation id)."
            )
        user = self.user(opts)
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
        try:
            op = operation_create(
                user=user,
                action=action,
                selection=selection,
                params=params,
                source=OperationSource.CLI,
                reason=opts["reason"],
                max_failures=opts["max_failures"],
            )
        except ValidationError as exc:
            raise CommandError(_error_text(exc)) from None
        except BulkOpsError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Operation {op.pk}: {action} of {op.total} sessions ({op.status}).")
        return op

    def watch(self, op: BulkOperation, *, timeout: float) -> BulkOperation:
        started = time.monotonic()
        hinted = False
        while True:
            op.refresh_from_db()
            self.draw(op)
            if op.is_finished or op.status == OperationStatus.PAUSED:
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
