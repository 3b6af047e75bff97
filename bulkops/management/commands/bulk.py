"""Operators' bulk actions from the command line, through the same services as the API.

One subcommand per action starts an operation: ``bulk close --user U --ids …|--filter
…``. One per operation command acts on an operation: ``bulk pause OP`` and ``bulk
resume OP`` (an operator's commands: any user's operation), ``bulk undo OP --user U``
(a finished operation of that user's). Each subcommand's options are generated: an
action's parameters from its ``Param``s, ``--max-failures`` and ``--filter`` from the
engine's input rules (``engine.inputs``), so argparse refuses what a subcommand does
not take, with its usage.

``--wait`` watches the operation to its end and exits with a status that says how it
ended (``EXIT_STATUS``).
"""

import argparse
import copy
import json
import sys
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from django.urls import reverse

from bulkops.actions import get_action, selectable_actions
from bulkops.actions.base import REASON_LABEL, BulkAction, Param
from bulkops.engine import (
    FILTER_KEYS,
    MAX_FAILURES,
    Selection,
    filter_from_text,
    operation_create,
    operation_pause,
    operation_resume,
    operation_undo,
)
from bulkops.engine.inputs import InputRule
from bulkops.exceptions import BulkOpsError, error_text
from bulkops.exports.storage import export_path, file_state
from bulkops.itemsummary import reason_counts
from bulkops.management.progress import ProgressDisplay
from bulkops.models import BulkOperation, ItemOutcome, OperationSource, OperationStatus
from bulkops.selectors import operation_get_for_user

#: ``--created-before D`` / ``--created-after D``: the filter keys that have an option of
#: their own (``--filter created_before=D`` says the same).
DATE_BOUNDS = ("created_before", "created_after")
#: ``bulk pause|resume <operation id>``: any user's operation.
CONTROLS = {"pause": operation_pause, "resume": operation_resume}
#: ``bulk undo <operation id> --user U``: a new operation undoing a finished one.
UNDO = "undo"

#: How ``--wait`` exits, by how the operation ended. 1 is any refusal (bad input, no
#: such user or operation, a state that does not allow it) and 2 a wrong command line
#: (argparse's usage error), as for every command.
EXIT_PAUSED = 3
EXIT_STATUS = {
    OperationStatus.COMPLETED: 0,
    OperationStatus.PAUSED: EXIT_PAUSED,
    OperationStatus.PARTIAL: 4,
    OperationStatus.FAILED: 5,
    OperationStatus.CANCELLED: 6,
}
#: ``--wait`` gave up after ``--timeout`` seconds: the operation is still pending or running.
EXIT_STILL_RUNNING = 7
EXIT_HELP = (
    "With --wait the exit status says how the operation ended: 0 completed, 3 paused, "
    "4 partial, 5 failed, 6 cancelled, 7 still running when --timeout ran out. "
    "1: refused (bad input, no such user or operation, a state that does not allow it); "
    "2: a wrong command line."
)


class SubcommandParser(CommandParser):
    """A subcommand's parser: it refuses what it does not take itself, with its own
    usage (argparse would leave extra arguments to ``bulk``'s parser, whose usage does
    not show the subcommand's options)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def rule_argument(rule: InputRule):
    """The argparse ``type`` of an input the engine has a rule for: the text read by the
    rule, then checked by it (a usage error naming the option otherwise)."""

    def read(text: str) -> Any:
        value = rule.from_text(text)
        problem = rule.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return read


def filter_argument(text: str) -> str:
    """The argparse ``type`` of one ``--filter KEY=VALUE``: checked by the engine's rule for
    its key (``handle`` reads the pairs with the same ``filter_from_text``)."""
    try:
        filter_from_text([text])
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(" ".join(exc.messages)) from None
    return text


def param_option(name: str, param: Param) -> tuple[str, dict]:
    """The ``bulk`` option of one action parameter, generated from its ``Param``."""
    flag = "--" + name.replace("_", "-")
    if not param.is_bool:
        return flag, {"choices": list(param.choices), "default": None, "help": param.label}
    if param.default:
        flag = param.cli_flag or f"--no-{name.replace('_', '-')}"
        help_text = param.cli_help or f"Turn off: {param.label}"
        return flag, {"action": "store_false", "default": None, "help": help_text}
    return flag, {"action": "store_true", "default": None, "help": param.label}


def django_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Django's own options (``--verbosity``, ``--settings``, ``--traceback``, …) for the
    subcommands too, so they may follow the subcommand as after any command; they keep
    the values given before it (default SUPPRESS) and stay out of its help."""
    common = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            copied = copy.copy(action)
            copied.default, copied.help = argparse.SUPPRESS, argparse.SUPPRESS
            common._add_action(copied)
    return common


def wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="Show a progress bar until the operation ends (or is paused); the exit "
        "status then says how it ended (see bulk --help).",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help=f"With --wait: give up waiting after this many seconds (exit {EXIT_STILL_RUNNING}).",
    )


def action_arguments(parser: argparse.ArgumentParser, action: type[BulkAction]) -> None:
    """``bulk <action>``'s options: the selection, the action's parameters, the reason and
    the failure threshold every action takes."""
    parser.add_argument("--user", required=True, help="Username the operation runs as.")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--ids", nargs="+", metavar="ID", help="Session ids.")
    target.add_argument(
        "--filter",
        nargs="+",
        metavar="KEY=VALUE",
        type=filter_argument,
        help=f"Select all that match; KEY is one of {', '.join(FILTER_KEYS)} "
        "(status=active,closed for several; deleted=true|false).",
    )
    for key in DATE_BOUNDS:
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            type=rule_argument(FILTER_KEYS[key]),
            default=None,
            metavar="DATE",
            help=f"The filter's {key} (a filter of its own without --filter): "
            f"{FILTER_KEYS[key].help}",
        )
    for name, param in action.params_spec.items():
        flag, kwargs = param_option(name, param)
        parser.add_argument(flag, dest=name, **kwargs)
    parser.add_argument("--reason", default="", metavar="TEXT", help=REASON_LABEL + ".")
    parser.add_argument(
        "--max-failures",
        type=rule_argument(MAX_FAILURES),
        default=None,
        metavar="N",
        help=MAX_FAILURES.help,
    )
    wait_arguments(parser)


class Command(BaseCommand):
    help = (
        "Start a bulk operation (bulk <action> --user U --ids …|--filter …), pause or "
        "resume one (bulk pause|resume <operation id>) or undo a finished one (bulk undo "
        "<operation id> --user U); with --wait, watch it to its end."
    )

    def add_arguments(self, parser):
        parser.epilog = EXIT_HELP
        django = django_options(parser)
        commands = parser.add_subparsers(
            dest="command",
            required=True,
            metavar="COMMAND",
            title="commands",
            parser_class=SubcommandParser,
        )
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

        def add(name: str, help_text: str) -> argparse.ArgumentParser:
            sub = commands.add_parser(
                name,
                parents=[django],
                help=help_text,
                description=help_text,
                epilog=EXIT_HELP,
                formatter_class=parser.formatter_class,
            )
            self.subcommands[name] = sub
            return sub

        for action_type, action in selectable_actions().items():
            sub = add(action_type, f"{action.display_name} the sessions of --ids or --filter.")
            action_arguments(sub, action)
        for verb in CONTROLS:
            sub = add(verb, f"{verb.capitalize()} an operation (any user's).")
            sub.add_argument("operation", metavar="OPERATION_ID", help="The operation (op-…).")
            wait_arguments(sub)
        sub = add(UNDO, "Undo a finished operation of the user's: a new operation.")
        sub.add_argument("operation", metavar="OPERATION_ID", help="The operation (op-…).")
        sub.add_argument("--user", required=True, help="Username whose operation it is.")
        wait_arguments(sub)

    def handle(self, *args, command: str, **opts):
        self.refuse_options_of_other_commands(command, opts)
        if command in CONTROLS:
            op = self.control(command, opts["operation"])
        elif command == UNDO:
            op = self.undo(opts)
        else:
            op = self.start(command, opts)
        if not opts["wait"]:
            self.stdout.write(f"Follow it with: GET /api/bulk/operations/{op.pk}/status")
            return
        op = self.watch(op, timeout=opts["timeout"])
        self.summary(op)
        if op.status == OperationStatus.PAUSED:
            self.stdout.write(f"Paused. Resume it with: manage.py bulk resume {op.pk}")
        if EXIT_STATUS[op.status]:
            sys.exit(EXIT_STATUS[op.status])

    def refuse_options_of_other_commands(self, command: str, opts: dict) -> None:
        """``call_command("bulk", …, **options)`` hands options to ``handle`` without the
        parser: refuse one that only another subcommand takes, as the parser would."""
        own = {action.dest for action in self.subcommands[command]._actions}
        for name, sub in self.subcommands.items():
            for action in sub._actions:
                given = opts.get(action.dest) not in (None, False, "")
                if name != command and action.dest not in own and given:
                    flag = action.option_strings[0] if action.option_strings else action.dest
                    self.subcommands[command].error(f"unrecognized arguments: {flag}")

    def control(self, verb: str, operation_id: str) -> BulkOperation:
        """``bulk pause|resume <operation id>``."""
        op = BulkOperation.objects.filter(pk=operation_id).first()
        if op is None:
            raise CommandError(f"bulk {verb} needs an existing operation id (op-…).")
        try:
            op = CONTROLS[verb](operation=op)
        except BulkOpsError as exc:
            raise CommandError(error_text(exc)) from None
        pausing = " (pausing after the current chunk)" if op.pause_requested else ""
        self.stdout.write(f"Operation {op.pk}: {op.status}{pausing}.")
        return op

    def user(self, username: str):
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None

    def undo(self, opts: dict) -> BulkOperation:
        """``bulk undo <operation id> --user U``: the user's own finished operation."""
        user = self.user(opts["user"])
        try:
            operation = operation_get_for_user(user=user, operation_id=opts["operation"])
            op = operation_undo(
                operation=operation, user=user, source=OperationSource.CLI, rate_scope=UNDO
            ).operation
        except (ValidationError, BulkOpsError) as exc:
            raise CommandError(error_text(exc)) from None
        self.stdout.write(f"Operation {op.pk}: {op.action} of {op.total} sessions ({op.status}).")
        return op

    def date_bounds(self, action: str, opts: dict) -> dict[str, str]:
        """``--created-before`` / ``--created-after`` as filter keys; refuse a command
        line without a selection, or with date bounds beside ``--ids`` (usage errors)."""
        bounds = {key: opts[key] for key in DATE_BOUNDS if opts.get(key) is not None}
        if opts["ids"] and bounds:
            flags = " ".join("--" + key.replace("_", "-") for key in bounds)
            self.subcommands[action].error(f"argument {flags}: not allowed with argument --ids")
        if not (opts["ids"] or opts["filter"] or bounds):
            self.subcommands[action].error("one of the arguments --ids --filter is required")
        return bounds

    def start(self, action: str, opts: dict) -> BulkOperation:
        """``bulk <action> --user U --ids …|--filter …``: create the operation."""
        bounds = self.date_bounds(action, opts)
        user = self.user(opts["user"])
        spec = get_action(action).params_spec
        params = {
            name: param.default if opts.get(name) is None else opts[name]
            for name, param in spec.items()
        }
        try:
            selection = (
                Selection(session_ids=opts["ids"])
                if opts["ids"]
                else Selection(filter={**filter_from_text(opts["filter"] or []), **bounds})
            )
            op = operation_create(
                user=user,
                action=action,
                selection=selection,
                params=params,
                source=OperationSource.CLI,
                reason=opts["reason"],
                max_failures=opts["max_failures"],
                rate_scope=action,
            ).operation
        except (ValidationError, BulkOpsError) as exc:
            raise CommandError(error_text(exc)) from None
        self.stdout.write(f"Operation {op.pk}: {action} of {op.total} sessions ({op.status}).")
        return op

    def watch(self, op: BulkOperation, *, timeout: float) -> BulkOperation:
        started = time.monotonic()
        display = ProgressDisplay(self.stdout, clock=time.monotonic)
        hinted = False
        while True:
            op.refresh_from_db()
            ended = op.is_finished or op.status == OperationStatus.PAUSED
            display.show(op, last=ended)
            if ended:
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
                    f"Gave up waiting after {timeout:.0f} s; {op.pk} is {op.status}.",
                    returncode=EXIT_STILL_RUNNING,
                )
            time.sleep(0.1)

    def summary(self, op: BulkOperation) -> None:
        self.stdout.write(
            f"{op.status}: {op.succeeded} succeeded, {op.skipped} skipped, {op.failed} failed, "
            f"{op.cancelled} cancelled of {op.total}."
        )
        if op.error:
            self.stdout.write(f"Error: {op.error}")
        # Counted in SQL: a large operation's items are millions.
        reasons = reason_counts(op, outcomes=(ItemOutcome.FAILED, ItemOutcome.SKIPPED))
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
