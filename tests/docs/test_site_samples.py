"""Every fenced block on the site is included from a tested file or run by a test; every page
is in the nav; relative links and anchors resolve; each domain has its reference page.

These checks read files only and need no build. Each check is also run against a small
broken site in a temporary directory, so a check that stopped finding problems fails too.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.docs.blocks import (
    REPO_ROOT,
    BlockNotFoundError,
    docs_block,
    find_block,
    parse_blocks,
    read_section,
    run_bash_block,
)
from tests.docs.checks import (
    check_blocks,
    check_links,
    check_nav,
    check_reference_pages,
)

pytestmark = pytest.mark.docs

GUIDE = "guides/testing-strategies.md"


def _report(problems: list[str]) -> str:
    return "\n".join(problems)


# ---------------------------------------------------------------------------- the real site


def test_every_block_is_included_or_tested() -> None:
    problems = check_blocks()
    assert not problems, _report(problems)


def test_every_page_is_in_the_nav() -> None:
    problems = check_nav()
    assert not problems, _report(problems)


def test_relative_links_and_anchors_resolve() -> None:
    problems = check_links()
    assert not problems, _report(problems)


def test_every_domain_has_a_reference_page() -> None:
    problems = check_reference_pages()
    assert not problems, _report(problems)


def test_the_worked_example_reports_what_the_guide_shows(tmp_path: Path) -> None:
    """The example page of the Testing Strategies guide, checked, gives the report it shows."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "example.md").write_text(docs_block(GUIDE, "ts-example-page"), encoding="utf-8")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_example.py").write_text(
        'def test_build():\n    run_bash_block("example.md", "example-build")\n', encoding="utf-8"
    )
    report = check_blocks(docs, repo_root=REPO_ROOT, tests_dir=tests)
    assert _report(report) == docs_block(GUIDE, "ts-example-report").strip()


# ------------------------------------------------------------------ the checks find problems


def _site(tmp_path: Path, pages: dict[str, str], nav: list[str] | None = None) -> Path:
    docs = tmp_path / "docs"
    for name, text in pages.items():
        path = docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    if nav is not None:
        lines = ["site_name: t", "site_dir: !ENV [X, site]", "nav:"]
        lines += [f"  - {p}" for p in nav]
        lines += ["markdown_extensions:", "  - x:", "      f: !!python/name:os.path.join"]
        (tmp_path / "mkdocs.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "tests").mkdir(exist_ok=True)
    return docs


def _tests_naming(tmp_path: Path, *ids: str) -> Path:
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    body = "".join(f'    docs_block("page.md", "{i}")\n' for i in ids) or "    pass\n"
    (tests / "test_page.py").write_text("def test_page():\n" + body, encoding="utf-8")
    return tests


def test_check_blocks_refuses_a_block_without_id(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "# P\n\n```python\nprint(1)\n```\n"})
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path))
    assert problems == [
        "docs/page.md:3: python block is neither a snippet include nor has an id "
        "({ .python #some-id }) named in a test"
    ]


def test_check_blocks_refuses_an_unlabelled_block(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "```\nplain\n```\n"})
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path))
    assert len(problems) == 1
    assert "unlabelled block is neither" in problems[0]


def test_check_blocks_refuses_an_id_no_test_names(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "```{ .bash #orphan-id }\necho hi\n```\n"})
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path, "another-id"))
    assert problems == ["docs/page.md:1: block #orphan-id is named by no test under tests/"]


def test_check_blocks_accepts_an_id_a_test_names(tmp_path: Path) -> None:
    docs = _site(
        tmp_path,
        {"page.md": "```{ .bash #named-id }\necho hi\n```\n\n```bash { #other-id }\necho\n```\n"},
    )
    assert check_blocks(docs, tmp_path, _tests_naming(tmp_path, "named-id", "other-id")) == []


def test_check_blocks_ignores_ids_held_only_by_blocks_py(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "```{ .bash #held-id }\necho hi\n```\n"})
    tests = _tests_naming(tmp_path)
    (tests / "docs").mkdir()
    (tests / "docs" / "blocks.py").write_text('ID = "held-id"\n', encoding="utf-8")
    assert len(check_blocks(docs, tmp_path, tests)) == 1


def test_check_blocks_refuses_a_header_superfences_cannot_read(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "```bash #no-braces\necho hi\n```\n"})
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path, "no-braces"))
    assert problems == [
        "docs/page.md:1: fence header is not one superfences reads; it renders as text"
    ]


def test_check_blocks_refuses_a_duplicate_id(tmp_path: Path) -> None:
    docs = _site(
        tmp_path,
        {
            "a.md": "```{ .bash #twice }\necho a\n```\n",
            "b.md": "```{ .bash #twice }\necho b\n```\n",
        },
    )
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path, "twice"))
    assert problems == [
        "docs/a.md:1: block id #twice is used 2 times",
        "docs/b.md:1: block id #twice is used 2 times",
    ]


def test_check_blocks_exempts_diagrams(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "```mermaid\nflowchart LR\n  a --> b\n```\n"})
    assert check_blocks(docs, tmp_path, _tests_naming(tmp_path)) == []


def _module(tmp_path: Path, rel: str, text: str) -> None:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


MODULE = """\
    import os

    # --8<-- [start:whole]
    def f():
        return os.sep
    # --8<-- [end:whole]

    # --8<-- [start:hollow]

    # --8<-- [end:hollow]

    # --8<-- [start:unended]
    x = 1
"""


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        ("reference_impl/mod.py:whole", None),
        ("reference_impl/mod.py", None),
        ("reference_impl/gone.py:whole", "include reference_impl/gone.py does not exist"),
        ("reference_impl/mod.py:absent", "section 'absent' missing in reference_impl/mod.py"),
        ("reference_impl/mod.py:unended", "section 'unended' missing in reference_impl/mod.py"),
        ("reference_impl/mod.py:hollow", "section 'hollow' of reference_impl/mod.py is empty"),
        ("reference_impl/mod.py:3:5", "include reference_impl/mod.py:3:5 names lines"),
        ("docs/fragment.py", "include docs/fragment.py is outside the tested trees"),
    ],
)
def test_check_blocks_checks_includes(tmp_path: Path, include: str, expected: str | None) -> None:
    _module(tmp_path, "reference_impl/mod.py", MODULE)
    page = f'# P\n\n```python\n--8<-- "{include}"\n```\n'
    docs = _site(tmp_path, {"page.md": page, "fragment.py": "x = 1\n"})
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path))
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        assert problems[0].startswith("docs/page.md:3: " + expected), problems


def test_check_blocks_treats_an_escaped_include_as_text(tmp_path: Path) -> None:
    _module(tmp_path, "reference_impl/mod.py", MODULE)
    docs = _site(tmp_path, {"page.md": '```python\n;--8<-- "reference_impl/mod.py:whole"\n```\n'})
    problems = check_blocks(docs, tmp_path, _tests_naming(tmp_path))
    assert len(problems) == 1
    assert "neither a snippet include nor has an id" in problems[0]


def test_check_nav_finds_an_orphan_page_and_a_missing_one(tmp_path: Path) -> None:
    docs = _site(
        tmp_path,
        {"index.md": "# Home\n", "lost.md": "# Lost\n", "sub/kept.md": "# Kept\n"},
        nav=["index.md", "sub/kept.md", "gone.md"],
    )
    assert check_nav(tmp_path / "mkdocs.yml", docs) == [
        "docs/lost.md: not in the nav of mkdocs.yml",
        "mkdocs.yml: nav names gone.md, which is not a page under docs/",
    ]


def test_check_links_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    docs = _site(
        tmp_path,
        {
            "index.md": """\
                # Home

                ## Getting `started` fast

                [ok](guide/a.md) and [ok anchor](guide/a.md#second-part)
                [self](#getting-started-fast) and [web](https://example.org/x.md)
                [missing page](guide/nope.md)
                [missing anchor](guide/a.md#nowhere)
                [absolute](/guide/a.md)
                [folder](guide/)

                ```text
                [inside a block](ignored.md)
                ```
                """,
            "guide/a.md": "# A\n\n## Second part\n\n[back](../index.md#getting-started-fast)\n",
        },
    )
    assert check_links(docs) == [
        "docs/index.md:7: link guide/nope.md: no such file",
        "docs/index.md:8: link guide/a.md#nowhere: no anchor #nowhere on guide/a.md",
        "docs/index.md:9: absolute link /guide/a.md; link to the page's .md file relatively",
        "docs/index.md:10: link guide/ is a folder; link to its index.md",
    ]


def test_check_reference_pages_finds_a_missing_and_a_stale_page(tmp_path: Path) -> None:
    _module(tmp_path, "reference_impl/__init__.py", "")
    _module(tmp_path, "reference_impl/events/__init__.py", "")
    _module(tmp_path, "reference_impl/events/service.py", "x = 1\n")
    _module(tmp_path, "reference_impl/empty/__init__.py", "")
    _module(tmp_path, "reference_impl/cli.py", "x = 1\n")
    docs = _site(tmp_path, {"reference/old.md": "# Old\n\n::: reference_impl.old\n"})
    assert check_reference_pages(tmp_path, docs) == [
        "reference_impl/cli.py: no page docs/reference/cli.md",
        "reference_impl/events/: no page docs/reference/events.md",
        "docs/reference/old.md: no package or module reference_impl/old",
    ]


# ------------------------------------------------------------------------ parsing the pages


def test_parse_blocks_reads_headers_nesting_and_indentation() -> None:
    page = textwrap.dedent(
        """\
        ````{ .markdown #outer }
        ```python
        inner = True
        ```
        ````

        !!! note
            ```{ .bash #indented title="run.sh" }
            echo indented
            ```

        ~~~yaml
        a: 1
        ~~~

        ```python title="x.py" linenums="1"
        x = 1
        ```
        """
    )
    blocks = parse_blocks(page, "p.md")
    assert [(b.line, b.lang, b.block_id) for b in blocks] == [
        (1, "markdown", "outer"),
        (8, "bash", "indented"),
        (12, "yaml", None),
        (16, "python", None),
    ]
    assert blocks[0].code == "```python\ninner = True\n```\n"
    assert blocks[1].code == "echo indented\n"
    assert blocks[1].options == {"title": "run.sh"}
    assert blocks[3].options == {"title": "x.py", "linenums": "1"}


def test_escaped_snippet_lines_read_as_the_reader_sees_them() -> None:
    [block] = parse_blocks('```{ .text #t }\n;--8<-- "a.py:b"\n```\n', "p.md")
    assert block.source == ';--8<-- "a.py:b"\n'
    assert block.code == '--8<-- "a.py:b"\n'
    assert block.includes is None


def test_docs_block_raises_for_a_missing_block() -> None:
    with pytest.raises(BlockNotFoundError, match="no block #no-such-block"):
        docs_block(GUIDE, "no-such-block")
    with pytest.raises(BlockNotFoundError, match="no page"):
        find_block("no/such/page.md", "ts-build-site")


def test_run_bash_block_stops_at_the_first_error(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": "```{ .bash #fails-midway }\nfalse\necho after\n```\n"})
    result = run_bash_block("page.md", "fails-midway", docs_dir=docs, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""


def test_run_bash_block_adds_env_and_runs_in_cwd(tmp_path: Path) -> None:
    docs = _site(tmp_path, {"page.md": '```{ .bash #greets }\necho "$GREETING from $PWD"\n```\n'})
    result = run_bash_block(
        "page.md", "greets", env={"GREETING": "hello"}, cwd=tmp_path, docs_dir=docs, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"hello from {tmp_path}\n"


def test_read_section_drops_other_markers(tmp_path: Path) -> None:
    _module(
        tmp_path,
        "m.py",
        """\
        # --8<-- [start:outer]
        a = 1
        # --8<-- [start:inner]
        b = 2
        # --8<-- [end:inner]
        # --8<-- [end:outer]
        """,
    )
    assert read_section(tmp_path / "m.py", "outer") == "a = 1\nb = 2"
    assert read_section(tmp_path / "m.py", "inner") == "b = 2"
    assert read_section(tmp_path / "m.py", "missing") is None
