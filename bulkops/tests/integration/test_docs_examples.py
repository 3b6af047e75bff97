"""The examples of README.md and of the API, WebSocket and CLI pages, run as written.

A newcomer runs README's first command, then pastes the examples into a second terminal.
This test does the same: it starts ``manage.py serve`` as the first command starts it
(the embedded default: demo data, a fresh SQLite file, no Redis) and runs every shell
and Python block of ``PAGES``, in that order, against it. It fails on a block that exits
non-zero, that does not finish within ``BLOCK_TIMEOUT`` seconds, or whose requests get
a 4xx or 5xx its text does not announce — read from the server's own request log.

The conventions a block is written to (``bulkops/tests/support/docs.py`` parses them):

- Blocks tagged ``bash`` (or ``sh``, ``shell``) and ``python`` run; ``text`` blocks are
  output, syntax or another language, and must not hold a command line (``curl …``,
  ``.venv/bin/python …``): a command belongs in a block that runs. README's first block
  (the two command lines) is the one exception: it is what starts the server here.
- Shell blocks run with ``set -euo pipefail`` in one terminal, as it were: the variables
  a block assigns (``TOKEN=…``, ``OP=…``) and the functions it defines stay set for the
  blocks after it, on every page. Each Python block is a complete script.
- Examples address the server as ``127.0.0.1:8000`` and the interpreter as
  ``.venv/bin/python``; the test substitutes its own port and interpreter. They run in an
  empty directory with ``manage.py`` (downloads land there, not in the repository).
- An HTML comment right above the opening fence announces the statuses a block's
  requests answer: ``<!-- expect: 409 -->`` — each of them must happen; ``<!-- allow:
  409 -->`` — it may happen (pause or cancel racing a fast operation). Any other 4xx or
  5xx, and any refused WebSocket handshake, fails the test. ``<!-- not run: why -->``
  keeps a shell or Python block from running, and says why.
- The sessions an example acts on are the demo data's (``demo-000000`` …): an id it
  does not have is no 4xx — the operation is accepted and the item fails ``not_found``
  — so a block whose operations record a ``not_found`` item fails the test too.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.processes import process_env
from bulkops.tests.support.docs import (
    PYTHON,
    SHELL,
    Block,
    blocks,
    commands_outside_runnable_blocks,
    headings_and_links,
)
from bulkops.tests.support.helpers import free_port
from bulkops.tests.support.processes import MANAGE, ROOT, Processes, wait_until

PAGES = ("README.md", "docs/api.md", "docs/websocket.md", "docs/cli.md")
BLOCK_TIMEOUT = 90  # seconds; the slowest block takes a few (manage.py starting Django)
DOCS_ADDRESS = "127.0.0.1:8000"
BARE_PYTHON = re.compile(r"(?<![\w/.-])python3?(?=\s)(?! -m venv)")
LOG_LINE = re.compile(r'"(?P<request>[^"]*)" (?P<status>\d{3}|-) ')


def all_blocks() -> list[Block]:
    found = [block for page in PAGES for block in blocks(ROOT, page)]
    return found[1:]  # README's first block: the two command lines, run by the fixture


# --- In process: the blocks are well formed -------------------------------------------------


def test_the_docs_pages_close_every_fence_and_mark_their_examples_well():
    found = all_blocks()  # raises on an unclosed fence or a malformed marker
    assert sum(block.runs for block in found) >= 10, "the examples were not found"
    hidden = {block.where: commands_outside_runnable_blocks(block) for block in found}
    assert {where: lines for where, lines in hidden.items() if lines} == {}, (
        "commands in blocks that do not run: tag them bash or python"
    )
    misplaced = [
        block.where
        for block in found
        if ((block.expect or block.allow) and not block.runs)
        or (block.not_run and block.lang not in SHELL | PYTHON)
    ]
    assert misplaced == [], "status markers belong on blocks that run, `not run` on code"
    # A bare `python` is the system's, without Django, in a newcomer's terminal (README's
    # commands never activate the virtual environment); the test's PATH may say otherwise.
    bare = [
        f"{block.where}: {line.strip()}"
        for block in found
        if block.lang in SHELL
        for line in block.code.splitlines()
        if BARE_PYTHON.search(line)
    ]
    assert bare == [], "run the virtual environment's interpreter: .venv/bin/python"


def test_readme_still_opens_with_the_run_and_test_lines():
    first = blocks(ROOT, "README.md")[0].code.splitlines()
    assert first[0].endswith(".venv/bin/python manage.py serve")
    assert first[1] == (
        "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt "
        "&& .venv/bin/python -m pytest"
    )


def test_readme_is_a_short_front_page_whose_links_all_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    pages = sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md"))
    _, readme_links = headings_and_links(ROOT, "README.md")
    assert {page for page in pages if page not in readme_links} == set(), "not linked"
    dead = []
    for page in ["README.md", *pages]:
        for target in headings_and_links(ROOT, page)[1]:
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = str((Path(page).parent / path) if path else Path(page))
            if not (ROOT / linked).exists():
                dead.append(f"{page}: {target} (no such file)")
            elif anchor and anchor not in headings_and_links(ROOT, linked)[0]:
                dead.append(f"{page}: {target} (no such heading)")
    assert dead == []


def test_markers_announce_statuses_and_a_fence_left_open_is_an_error(tmp_path):
    (tmp_path / "page.md").write_text(
        "<!-- expect: 409 -->\n```bash\ncurl …\n```\n\n```python\nprint()\n"
    )
    with pytest.raises(ValueError, match=r"page\.md:6: this code fence is never closed"):
        blocks(tmp_path, "page.md")
    (tmp_path / "page.md").write_text("<!-- expect: 409 -->\n```bash\ncurl …\n```\n")
    (block,) = blocks(tmp_path, "page.md")
    assert (block.line, block.expect, block.runs) == (2, {409}, True)
    assert unannounced(block, [("POST /api/x", "409"), ("GET /api/y", "200")]) == []
    assert unannounced(block, [("GET /api/y", "404"), ("WSREJECT /ws/bulk/", "-")]) == [
        "404 to GET /api/y, not announced",
        "refused WebSocket handshake: WSREJECT /ws/bulk/",
        "expected a 409 (announced), none came",
    ]


# --- Against a real server -------------------------------------------------------------------


class Newcomer:
    """One terminal next to a running ``serve``: runs blocks, reads the request log."""

    def __init__(self, tmp: Path, base: str, log: Path, env: dict[str, str]) -> None:
        self.tmp, self.base, self.log, self.env = tmp, base, log, env
        self.workdir = tmp / "terminal"
        self.workdir.mkdir()
        (self.workdir / "manage.py").symlink_to(ROOT / "manage.py")
        self.state = tmp / "shell-state.sh"
        self.names: set[str] = set()
        self.log_offset = 0
        self.marks = 0
        self.items_seen = 0

    def adapt(self, code: str) -> str:
        port = self.base.rsplit(":", 1)[1]
        code = code.replace(DOCS_ADDRESS, f"127.0.0.1:{port}")
        return code.replace(".venv/bin/python", shlex.quote(sys.executable))

    def script(self, block: Block) -> list[str]:
        code = self.adapt(block.code)
        if block.lang in PYTHON:
            path = self.tmp / f"example-{block.line}.py"
            path.write_text(code)
            return [sys.executable, str(path)]
        self.names |= set(re.findall(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=", code, re.M))
        state = shlex.quote(str(self.state))
        keep = " ".join(sorted(self.names)) or ":"
        script = (
            f"set -euo pipefail\n[ -f {state} ] && source {state}\n{code}\n"
            f"{{ declare -p {keep} 2>/dev/null || true; declare -f; }} > {state}\n"
        )
        return ["bash", "-c", script]

    def run(self, block: Block) -> tuple[int | None, str]:
        """Run the block; (exit status or None on a timeout, its output)."""
        proc = subprocess.Popen(
            self.script(block),
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out

    def requests_since_last_mark(self) -> list[tuple[str, str]]:
        """(request, status) of every log line since the previous call: a marker request
        is sent and waited for, so every request made before it is in the log."""
        self.marks += 1
        mark = f"/healthz?docs-example={self.marks}"
        with urllib.request.urlopen(self.base + mark, timeout=30) as response:
            assert response.status == 200
        wait_until(lambda: f'"GET {mark}"' in self.log.read_text(), "the request log")
        text = self.log.read_text()
        fresh, self.log_offset = text[self.log_offset :], len(text)
        found = [(m["request"], m["status"]) for m in LOG_LINE.finditer(fresh)]
        return [(request, status) for request, status in found if mark not in request]

    def ids_not_found_since_last_call(self) -> list[str]:
        """The session ids of the items recorded ``not_found`` since the previous call:
        ids an example named that the demo data does not have (or not for its user)."""
        conn = sqlite3.connect(self.tmp / "db.sqlite3", timeout=30)
        try:
            rows = conn.execute(
                "SELECT id, session_id, reason FROM bulkops_bulkoperationitem WHERE id > ?",
                (self.items_seen,),
            ).fetchall()
        finally:
            conn.close()
        self.items_seen = max([self.items_seen, *(pk for pk, _, _ in rows)])
        return [session_id for _, session_id, reason in rows if reason == "not_found"]


def unannounced(block: Block, requests: list[tuple[str, str]]) -> list[str]:
    """What the block's requests, (request line, status) from the log, did that its
    markers do not announce — and the announced statuses that never came."""
    announced = block.expect | block.allow
    problems = []
    for request, status in requests:
        if request.startswith("WSREJECT") and 403 not in announced:
            problems.append(f"refused WebSocket handshake: {request}")
        elif status.isdigit() and int(status) >= 400 and int(status) not in announced:
            problems.append(f"{status} to {request}, not announced")
    answered = {int(status) for _, status in requests if status.isdigit()}
    problems += [f"expected a {code} (announced), none came" for code in block.expect - answered]
    return problems


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """``manage.py serve`` as README's first command starts it (here: on a port and a
    SQLite file of its own), and a terminal next to it."""
    tmp = tmp_path_factory.mktemp("docs-examples")
    env = process_env(database_url=f"sqlite:///{tmp / 'db.sqlite3'}", workdir=tmp)
    procs = Processes(tmp, env)
    port = free_port()
    try:
        server = procs.start("serve", [*MANAGE, "serve", "--port", str(port)])
        wait_until(
            lambda: "Press Ctrl+C to stop." in procs.log("serve") or procs.died(server, "serve"),
            "serve to start",
        )
        yield Newcomer(tmp, f"http://127.0.0.1:{port}", tmp / "serve.log", env)
    finally:
        procs.stop_all(grace=30)


@pytest.mark.processes
@pytest.mark.timeout(900)
def test_every_example_runs_as_written_against_serve(newcomer):
    newcomer.requests_since_last_mark()  # what serve's start-up wait asked
    failures = []
    ran = 0
    for block in all_blocks():
        if not block.runs:
            continue
        ran += 1
        started = time.monotonic()
        status, output = newcomer.run(block)
        problems = unannounced(block, newcomer.requests_since_last_mark())
        if missing := newcomer.ids_not_found_since_last_call():
            problems.append(f"sessions the demo data does not have: {', '.join(missing)}")
        if status is None:
            problems.append(f"still running after {BLOCK_TIMEOUT} s (killed)")
        elif status != 0:
            problems.append(f"exited with status {status}")
        if problems:
            failures.append(
                f"--- {block.where} ({time.monotonic() - started:.1f} s): {'; '.join(problems)}\n"
                f"{block.code}--- output:\n{output[-3000:]}"
            )
    assert ran >= 10
    assert not failures, (
        "\n\n".join(failures) + "\n\n--- serve log (tail):\n" + (newcomer.log.read_text()[-3000:])
    )
