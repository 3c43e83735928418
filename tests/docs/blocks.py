"""Fenced code blocks of the guide site, as data, for the tests that check and execute them.

Every page under `docs/` is split into fenced blocks the way `pymdownx.superfences` reads
them. A block is one of:

- a **snippet include**: its body is only `--8<-- "path"` or `--8<-- "path:section"` lines,
  cut by `pymdownx.snippets` from a real, tested module;
- a **block with an id** (`{ .bash #some-id }`), which a test under `tests/` fetches with
  `docs_block` or runs with `run_bash_block` and checks;
- a **diagram** (`mermaid`), exempt: the browser test checks that it renders.

Anything else fails `tests/docs/test_site_samples.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from markdown.extensions.attr_list import get_attrs

__all__ = [
    "DOCS_DIR",
    "REPO_ROOT",
    "TESTS_DIR",
    "Block",
    "BlockNotFoundError",
    "SnippetRef",
    "docs_block",
    "find_block",
    "iter_pages",
    "parse_blocks",
    "read_section",
    "run_bash_block",
    "site_blocks",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = REPO_ROOT / "docs"
TESTS_DIR = REPO_ROOT / "tests"

# Fences superfences renders as diagrams rather than code.
DIAGRAM_LANGS = frozenset({"mermaid"})

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<header>.*)$")
# The header superfences accepts: `lang`, `lang {attrs}`, `{ .lang #id }`, `lang key="v"`.
_HEADER = re.compile(
    r"""^[ \t]*\.?(?P<lang>[\w#.+-]+)?
    (?:[ \t]*\{(?P<attrs>[^\n]*)\}
      |(?P<options>(?:[ \t]+[a-zA-Z][a-zA-Z0-9_]*(?:=(?P<q>["']).*?(?P=q))?)+)
    )?[ \t]*$""",
    re.VERBOSE,
)
_OPTION = re.compile(r"""(?P<key>[a-zA-Z][a-zA-Z0-9_]*)(?:=(?P<q>["'])(?P<value>.*?)(?P=q))?""")
# The single-line include form of pymdownx.snippets; `;` in front escapes it.
_SNIPPET_LINE = re.compile(
    r"""^[ \t]*(?P<escape>;*)-+8<-+[ \t]+(?P<q>["'])(?P<target>.+?)(?P=q)[ \t]*$"""
)
_SECTION_NAME = re.compile(r"(?i)^[a-z][-_0-9a-z]*$")
_SECTION_MARKER = re.compile(
    r"(?i)(?<!;)-+8<-+[ \t]+\[[ \t]*(?P<type>start|end)[ \t]*:"
    r"[ \t]*(?P<name>[a-z][-_0-9a-z]*)[ \t]*\]"
)
_LINE_RANGE = re.compile(r"^(?::-?\d*){1,2}(?:,.*)?$")


class BlockNotFoundError(LookupError):
    """No block with that id on that page."""


# --8<-- [start:snippet-ref]
@dataclass(frozen=True, slots=True)
class SnippetRef:
    """One `--8<-- "path[:section]"` line of an include block."""

    path: str
    section: str | None = None
    line_range: str | None = None
    """Set when the include names lines (`file.py:10:20`), which the site does not allow."""


# --8<-- [end:snippet-ref]


# --8<-- [start:block]
@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of a page, as superfences reads it."""

    page: str
    """Path of the page relative to `docs/`, with `/` separators."""
    line: int
    """1-based line of the opening fence."""
    lang: str
    block_id: str | None
    classes: tuple[str, ...]
    options: Mapping[str, str] = field(compare=False)
    code: str
    """The body as the reader sees it (escaped snippet lines unescaped)."""
    source: str
    """The body as written in the page."""
    header_ok: bool = True
    """False when superfences would not accept the fence header (it renders as text)."""

    @property
    def is_diagram(self) -> bool:
        return self.lang in DIAGRAM_LANGS

    @property
    def includes(self) -> tuple[SnippetRef, ...] | None:
        """The snippet lines when the body is nothing else, otherwise None."""
        refs: list[SnippetRef] = []
        for line in self.source.splitlines():
            if not line.strip():
                continue
            m = _SNIPPET_LINE.match(line)
            if m is None or m.group("escape"):
                return None
            refs.append(_snippet_ref(m.group("target")))
        return tuple(refs) or None


# --8<-- [end:block]


def _snippet_ref(target: str) -> SnippetRef:
    # Same split as pymdownx.snippets: a trailing `:name` is a section, `:N:M` a line range.
    path, sep, rest = target.partition(":")
    if not sep:
        return SnippetRef(path=target)
    if _SECTION_NAME.match(rest):
        return SnippetRef(path=path, section=rest)
    if _LINE_RANGE.match(":" + rest):
        return SnippetRef(path=path, line_range=rest)
    return SnippetRef(path=target)


def _parse_header(header: str) -> tuple[bool, str, str | None, tuple[str, ...], dict[str, str]]:
    m = _HEADER.match(header)
    if m is None:
        return False, "", None, (), {}
    lang = m.group("lang") or ""
    block_id: str | None = None
    classes: list[str] = []
    options: dict[str, str] = {}
    if m.group("attrs") is not None:
        for key, value in get_attrs(m.group("attrs")):
            if key == "id":
                block_id = value
            elif key == ".":
                classes.append(value)
            else:
                options[key] = value
        if not lang and classes:
            lang = classes.pop(0)
    elif m.group("options"):
        for om in _OPTION.finditer(m.group("options")):
            options[om.group("key")] = om.group("value") or om.group("key")
    return True, lang, block_id, tuple(classes), options


def _unescape(line: str) -> str:
    m = _SNIPPET_LINE.match(line)
    if m and m.group("escape"):
        i = line.index(";")
        return line[:i] + line[i + 1 :]
    return line


# --8<-- [start:parse-blocks]
def parse_blocks(text: str, page: str) -> list[Block]:
    """Split a page into its top-level fenced blocks.

    A fence opens with three or more backticks or tildes and closes with the same run at the
    start of a line; blocks inside a longer fence belong to it, as in superfences. Fences
    indented under an admonition or a tab are found too and dedented.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None or (m.group("fence")[0] == "`" and "`" in m.group("header")):
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent").expandtabs(4))
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:  # an unclosed fence runs to the end of the page, as in superfences
            end = len(lines)
        body = [line.expandtabs(4)[indent:] for line in lines[i + 1 : end]]
        ok, lang, block_id, classes, options = _parse_header(m.group("header"))
        blocks.append(
            Block(
                page=page,
                line=i + 1,
                lang=lang,
                block_id=block_id,
                classes=classes,
                options=options,
                code="\n".join(_unescape(line) for line in body) + ("\n" if body else ""),
                source="\n".join(body) + ("\n" if body else ""),
                header_ok=ok,
            )
        )
        i = end + 1
    return blocks


# --8<-- [end:parse-blocks]


def iter_pages(docs_dir: Path = DOCS_DIR) -> Iterator[str]:
    """Every markdown page under `docs_dir`, relative and with `/` separators, sorted."""
    for path in sorted(docs_dir.rglob("*.md")):
        yield path.relative_to(docs_dir).as_posix()


def site_blocks(docs_dir: Path = DOCS_DIR) -> list[Block]:
    """Every fenced block of every page under `docs_dir`."""
    blocks: list[Block] = []
    for page in iter_pages(docs_dir):
        blocks.extend(parse_blocks((docs_dir / page).read_text(encoding="utf-8"), page))
    return blocks


def find_block(page: str, block_id: str, docs_dir: Path = DOCS_DIR) -> Block:
    """The block with `block_id` on `page`.

    Raises:
        BlockNotFoundError: the page has no block with that id (or does not exist).
    """
    path = docs_dir / page
    if not path.is_file():
        raise BlockNotFoundError(f"no page {page!r} under {docs_dir}")
    for block in parse_blocks(path.read_text(encoding="utf-8"), page):
        if block.block_id == block_id:
            return block
    raise BlockNotFoundError(f"no block #{block_id} on {page}")


# --8<-- [start:docs-block]
def docs_block(page: str, block_id: str, docs_dir: Path = DOCS_DIR) -> str:
    """The code of block `#block_id` on `page` (relative to `docs/`), as the reader sees it.

    Raises:
        BlockNotFoundError: the page has no block with that id.
    """
    return find_block(page, block_id, docs_dir).code


def run_bash_block(
    page: str,
    block_id: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = 120,
    docs_dir: Path = DOCS_DIR,
) -> subprocess.CompletedProcess[str]:
    """Run a bash block with `set -euo pipefail` and capture its output.

    `env` is added to this process's environment. The caller asserts on the result: a block
    that only has to exit 0 still says so in its test.
    """
    code = docs_block(page, block_id, docs_dir)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --8<-- [end:docs-block]


def read_section(path: Path, section: str) -> str | None:
    """The text between `--8<-- [start:section]` and `--8<-- [end:section]` in `path`.

    Other section markers inside are dropped, as pymdownx.snippets drops them. Returns None
    when the start or the end marker is missing.
    """
    marker = _SECTION_MARKER
    inside, found_end = False, False
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = marker.search(line)
        if m is None:
            if inside:
                out.append(line)
            continue
        if m.group("name") != section:
            continue
        if m.group("type") == "start" and not inside:
            inside = True
        elif m.group("type") == "end" and inside:
            found_end = True
            break
    if not found_end:
        return None
    return "\n".join(out)
