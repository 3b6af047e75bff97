"""The ``bulk`` command's tests: the user's sessions, and operations named on a command line."""

from __future__ import annotations

import pytest

from bulkops.engine import Selection, operation_create, operation_pause
from bulkops.tests.support.helpers import execute


@pytest.fixture
def sessions(owner, make_session):
    """The user's sessions: three active *Alpha* ones, one closed, one soft-deleted."""
    for n in (1, 2, 3):
        make_session(owner, id=f"a{n}", title=f"Alpha {n}")
    make_session(owner, id="c1", status="closed", title="Closed one")
    make_session(owner, id="d1", deleted=True, title="Deleted one")


@pytest.fixture
def name_operations(owner):
    """``name_operations(line)``: the operations ``line`` names — ``{pending}`` (a close of
    a1 not started), ``{paused}`` (the same, paused), ``{done}`` (a close of a1 and a2
    that completed) — created as it needs them: {name: operation id}."""

    def create(line: str) -> dict[str, str]:
        named = {}
        if "{pending}" in line:
            named["pending"] = operation_create(
                user=owner, action="close", selection=Selection(session_ids=["a1"])
            ).operation.pk
        if "{paused}" in line:
            op = operation_create(
                user=owner, action="close", selection=Selection(session_ids=["a1"])
            ).operation
            named["paused"] = operation_pause(operation=op).pk
        if "{done}" in line:
            named["done"] = execute(owner, "close", ["a1", "a2"]).pk
        return named

    return create
