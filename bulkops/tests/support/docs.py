"""The fenced code blocks of README.md and the docs pages, with their markers, for the
tests that run them (integration/test_docs_examples.py). Nothing here is a test.

A block is one fenced block (three backticks, an optional language). The HTML comments
on the lines right above its opening fence are its markers:

- ``<!-- expect: 409 422 -->``: the block's requests answer each of these statuses
  (the text next to the block says so); any other 4xx or 5xx is a failure;
- ``<!-- allow: 409 -->``: the block's requests may answer these statuses — for an
  example racing a fast operation (pause or cancel of one that may already be done);
- ``<!-- not run: why -->``: a shell or Python block that is not run, saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: Block languages that are run: shell and Python.
SHELL = frozenset({"bash", "sh", "shell"})
PYTHON = frozenset({"python"})
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(?P<kind>expect|allow|not run):\s*(?P<value>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    expect: frozenset[int] = frozenset()
    allow: frozenset[int] = frozenset()
    not_run: str | None = None
    markers: tuple[str, ...] = field(default=(), compare=False)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in SHELL | PYTHON and self.not_run is None


def _statuses(value: str, where: str) -> frozenset[int]:
    codes = value.split()
    if not codes or not all(re.fullmatch(r"[1-5]\d\d", code) for code in codes):
        raise ValueError(f"{where}: a status marker lists HTTP statuses, got {value!r}")
    return frozenset(int(code) for code in codes)


def _markers_above(lines: list[str], index: int, where: str) -> dict:
    """The markers on the lines right above ``lines[index]`` (the opening fence)."""
    found: dict = {"markers": []}
    i = index - 1
    while i >= 0 and (match := MARKER.match(lines[i].strip())):
        kind, value = match["kind"], match["value"]
        found["markers"].append(lines[i].strip())
        if kind == "not run":
            if not value:
                raise ValueError(f"{where}: `not run` says why")
            found["not_run"] = value
        else:
            found[kind] = _statuses(value, where)
        i -= 1
    return found


def blocks(root: Path, page: str) -> list[Block]:
    """Every fenced block of ``page`` (a path relative to ``root``), in page order.
    Raise ValueError for a fence never closed or a malformed marker."""
    lines = (root / page).read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        where = f"{page}:{i + 1}"
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{where}: this code fence is never closed")
        indent = len(opening["indent"])
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        markers = _markers_above(lines, i, where)
        found.append(
            Block(
                page=page,
                line=i + 1,
                lang=opening["lang"],
                code=code,
                expect=markers.get("expect", frozenset()),
                allow=markers.get("allow", frozenset()),
                not_run=markers.get("not_run"),
                markers=tuple(markers["markers"]),
            )
        )
        i = end + 1
    return found


#: Lines that are commands a reader would type: they belong in a block that runs.
COMMAND = re.compile(r"^\s*(curl\s|\.venv/bin/python\s|python3?\s|[A-Z_]+=\$\()")


def commands_outside_runnable_blocks(block: Block) -> list[str]:
    """The command lines of a block that is neither run nor marked ``not run``."""
    if block.lang in SHELL | PYTHON:
        return []
    return [line for line in block.code.splitlines() if COMMAND.match(line)]


#: A Markdown link: ``[text](target)``.
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def headings_and_links(root: Path, page: str) -> tuple[set[str], list[str]]:
    """The anchors of ``page``'s headings (as GitHub makes them: lower case, punctuation
    dropped, spaces as hyphens) and the targets of its links, code blocks left out."""
    anchors, links, in_code = set(), [], False
    for line in (root / page).read_text().splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
        elif not in_code:
            links += [m["target"] for m in LINK.finditer(line)]
    return anchors, links
