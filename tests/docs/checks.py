"""Static checks of the guide site; each returns problems as `docs/page.md:line: message`.

They read files only (no mkdocs build), so they run in the fast suite. The strict build
(`test_build.py`) checks the same links and anchors again, with mkdocs' own resolver.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from markdown.extensions.toc import slugify

from tests.docs.blocks import (
    DOCS_DIR,
    REPO_ROOT,
    TESTS_DIR,
    Block,
    iter_pages,
    parse_blocks,
    read_section,
    site_blocks,
)

__all__ = [
    "SAMPLE_ROOTS",
    "check_blocks",
    "check_links",
    "check_nav",
    "check_reference_pages",
    "nav_pages",
    "string_literals_in_tests",
]

# Where an included sample may come from: modules that run and are tested, and mkdocs.yml,
# which every strict build reads.
SAMPLE_ROOTS = (
    "reference_impl",
    "playbooks",
    "chaos",
    "loadtests",
    "migrations",
    "deploy",
    "tests",
    "mkdocs.yml",
)


def _where(docs_dir: Path, page: str, line: int | None = None) -> str:
    return f"{docs_dir.name}/{page}" + (f":{line}" if line is not None else "")


# --8<-- [start:string-literals]
def string_literals_in_tests(tests_dir: Path = TESTS_DIR, *, skip: Iterable[Path] = ()) -> set[str]:
    """Every string constant in the Python files under `tests_dir`.

    A block id counts as tested when it appears here: a test names it to fetch or run the
    block. Files that do not parse are left out (pytest reports them on its own).
    """
    skipped = {p.resolve() for p in skip}
    found: set[str] = set()
    for path in sorted(tests_dir.rglob("*.py")):
        if path.resolve() in skipped:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError):
            continue
        found.update(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        )
    return found


# --8<-- [end:string-literals]


def _check_include(block: Block, docs_dir: Path, repo_root: Path) -> Iterator[str]:
    where = _where(docs_dir, block.page, block.line)
    for ref in block.includes or ():
        if ref.line_range is not None:
            yield f"{where}: include {ref.path}:{ref.line_range} names lines; mark a named section"
            continue
        path = repo_root / ref.path
        if Path(ref.path).parts[:1] not in [(root,) for root in SAMPLE_ROOTS]:
            roots = ", ".join(SAMPLE_ROOTS)
            yield f"{where}: include {ref.path} is outside the tested trees {roots}"
            continue
        if not path.is_file():
            yield f"{where}: include {ref.path} does not exist"
            continue
        if ref.section is None:
            if not path.read_text(encoding="utf-8").strip():
                yield f"{where}: include {ref.path} is empty"
            continue
        text = read_section(path, ref.section)
        if text is None:
            yield f"{where}: section {ref.section!r} missing in {ref.path} (start and end marker)"
        elif not text.strip():
            yield f"{where}: section {ref.section!r} of {ref.path} is empty"


# --8<-- [start:check-blocks]
def check_blocks(
    docs_dir: Path = DOCS_DIR,
    repo_root: Path = REPO_ROOT,
    tests_dir: Path = TESTS_DIR,
) -> list[str]:
    """Every fenced block is a diagram, an include of a real section, or has a tested id."""
    literals = string_literals_in_tests(tests_dir, skip=[tests_dir / "docs" / "blocks.py"])
    blocks = site_blocks(docs_dir)
    problems: list[str] = []
    for block in blocks:
        where = _where(docs_dir, block.page, block.line)
        if not block.header_ok:
            problems.append(
                f"{where}: fence header is not one superfences reads; it renders as text"
            )
        elif block.is_diagram:
            continue
        elif block.includes is not None:
            problems.extend(_check_include(block, docs_dir, repo_root))
        elif block.block_id is None:
            lang = block.lang or "unlabelled"
            problems.append(
                f"{where}: {lang} block is neither a snippet include nor has an id "
                f"({{ .{block.lang or 'lang'} #some-id }}) named in a test"
            )
        elif block.block_id not in literals:
            problems.append(f"{where}: block #{block.block_id} is named by no test under tests/")
    ids = Counter(b.block_id for b in blocks if b.block_id)
    problems.extend(
        f"{_where(docs_dir, b.page, b.line)}: block id #{b.block_id} is used "
        f"{ids[b.block_id]} times"
        for b in blocks
        if b.block_id and ids[b.block_id] > 1
    )
    return problems


# --8<-- [end:check-blocks]


class _MkdocsLoader(yaml.SafeLoader):
    """Reads mkdocs.yml without resolving `!ENV` or `!!python/name:` tags."""


_MkdocsLoader.add_constructor("!ENV", lambda loader, node: None)
_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def load_mkdocs_config(path: Path) -> dict[str, Any]:
    """mkdocs.yml as plain data (tags that need mkdocs become None)."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_MkdocsLoader)  # noqa: S506
    return data if isinstance(data, dict) else {}


def nav_pages(config: dict[str, Any]) -> list[str]:
    """The markdown files the nav names, in nav order."""
    out: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            if item.endswith(".md"):
                out.append(item)
        elif isinstance(item, list):
            for sub in item:
                walk(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)

    walk(config.get("nav", []))
    return out


def check_nav(mkdocs_yml: Path = REPO_ROOT / "mkdocs.yml", docs_dir: Path = DOCS_DIR) -> list[str]:
    """Every page is in the nav, and every nav entry is a page."""
    listed = nav_pages(load_mkdocs_config(mkdocs_yml))
    pages = set(iter_pages(docs_dir))
    problems = [
        f"{_where(docs_dir, p)}: not in the nav of mkdocs.yml" for p in sorted(pages - set(listed))
    ]
    problems += [
        f"mkdocs.yml: nav names {p}, which is not a page under docs/"
        for p in listed
        if p not in pages
    ]
    problems += [f"mkdocs.yml: nav names {p} twice" for p, n in Counter(listed).items() if n > 1]
    return problems


_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)"
)
_REF_DEF = re.compile(r"^[ ]{0,3}\[[^\]]+\]:\s*(?P<target>\S+)", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<text>.+?)[ \t]*#*[ \t]*$")
_ATTR_ID = re.compile(r"\{[^}]*#(?P<id>[\w-]+)[^}]*\}\s*$")
_HTML_ID = re.compile(r"""\bid=["'](?P<id>[^"']+)["']""")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str, page: str) -> list[str]:
    """The page's lines with fenced blocks blanked out (line numbers kept)."""
    lines = text.splitlines()
    for block in parse_blocks(text, page):
        end = block.line + len(block.source.splitlines()) + 1
        for i in range(block.line - 1, min(end, len(lines))):
            lines[i] = ""
    return lines


def _heading_text(raw: str) -> str:
    text = re.sub(r"\{[^}]*\}\s*$", "", raw)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r"\1", text)
    return text.replace("`", "").replace("**", "").strip()


def page_anchors(text: str, page: str) -> set[str]:
    """Anchors a page defines: heading slugs as `toc` makes them, `{#id}` attributes, block
    ids and HTML ids."""
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    for line in _prose_lines(text, page):
        m = _HEADING.match(line)
        if m:
            explicit = _ATTR_ID.search(m.group("text"))
            if explicit:
                anchors.add(explicit.group("id"))
                continue
            slug = slugify(_heading_text(m.group("text")), "-")
            anchors.add(slug if not seen[slug] else f"{slug}_{seen[slug]}")
            seen[slug] += 1
        anchors.update(m2.group("id") for m2 in _ATTR_ID.finditer(line) if not m)
        anchors.update(m2.group("id") for m2 in _HTML_ID.finditer(line))
    anchors.update(b.block_id for b in parse_blocks(text, page) if b.block_id)
    return anchors


# --8<-- [start:check-links]
def check_links(docs_dir: Path = DOCS_DIR) -> list[str]:
    """Relative links between pages point at pages (by their `.md` file) and at anchors that
    exist. Anchors into pages rendered by mkdocstrings are left to the strict build."""
    problems: list[str] = []
    texts = {page: (docs_dir / page).read_text(encoding="utf-8") for page in iter_pages(docs_dir)}
    for page, text in texts.items():
        for number, line in enumerate(_prose_lines(text, page), start=1):
            line = _CODE_SPAN.sub("", line)
            targets = [m.group("target").strip("<>") for m in _LINK.finditer(line)]
            targets += [m.group("target") for m in _REF_DEF.finditer(line)]
            for target in targets:
                problem = _check_target(page, target, texts, docs_dir)
                if problem:
                    problems.append(f"{_where(docs_dir, page, number)}: {problem}")
    return problems


# --8<-- [end:check-links]


def _check_target(page: str, target: str, texts: dict[str, str], docs_dir: Path) -> str | None:
    if _SCHEME.match(target):
        return None
    path, _, anchor = target.partition("#")
    if path.startswith("/"):
        return f"absolute link {target}; link to the page's .md file relatively"
    if not path:
        dest = page
    else:
        resolved = (docs_dir / page).parent / path
        try:
            dest = resolved.resolve().relative_to(docs_dir.resolve()).as_posix()
        except ValueError:
            return f"link {target} leaves docs/"
        if not resolved.exists():
            return f"link {target}: no such file"
        if resolved.is_dir():
            return f"link {target} is a folder; link to its index.md"
    if not anchor or dest not in texts or "\n::: " in "\n" + texts[dest]:
        return None
    if anchor not in page_anchors(texts[dest], dest):
        return f"link {target}: no anchor #{anchor} on {dest}"
    return None


def check_reference_pages(repo_root: Path = REPO_ROOT, docs_dir: Path = DOCS_DIR) -> list[str]:
    """Each domain package with a public module, and each public top-level module (`cli.py`),
    has `docs/reference/<name>.md` rendering it; each reference page renders something that
    exists."""
    problems: list[str] = []
    package_root = repo_root / "reference_impl"
    for entry in sorted(package_root.iterdir()):
        if entry.name.startswith("_"):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            name, shown = entry.name, f"reference_impl/{entry.name}/"
            public = any(
                not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").is_file())
                for p in entry.iterdir()
            )
        elif entry.suffix == ".py":
            name, shown, public = entry.stem, f"reference_impl/{entry.name}", True
        else:
            continue
        page = docs_dir / "reference" / f"{name}.md"
        directive = f"::: reference_impl.{name}"
        if public and not page.is_file():
            problems.append(f"{shown}: no page docs/reference/{name}.md")
        elif page.is_file() and directive not in page.read_text(encoding="utf-8"):
            problems.append(f"{_where(docs_dir, f'reference/{name}.md')}: lacks `{directive}`")
    for page in sorted((docs_dir / "reference").glob("*.md")):
        stem = page.stem
        exists = (package_root / stem / "__init__.py").is_file() or (
            package_root / f"{stem}.py"
        ).is_file()
        if stem != "index" and not exists:
            problems.append(
                f"{_where(docs_dir, f'reference/{page.name}')}: "
                f"no package or module reference_impl/{stem}"
            )
    return problems
