"""Building the site the way a person does, and where each page lands in it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.docs.blocks import run_bash_block

__all__ = ["BUILD_BLOCK", "BUILD_PAGE", "BuiltSite", "build_site", "page_url"]

# The build runs the command shown on this page, so the page cannot show another one.
BUILD_PAGE = "guides/testing-strategies.md"
BUILD_BLOCK = "ts-build-site"


@dataclass(frozen=True)
class BuiltSite:
    """The outcome of one strict build: where it went and what it printed."""

    site_dir: Path
    process: subprocess.CompletedProcess[str]

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0

    @property
    def log(self) -> str:
        return f"exit code {self.process.returncode}\n{self.process.stdout}\n{self.process.stderr}"


def build_site(site_dir: Path, timeout: float = 600) -> BuiltSite:
    """Run the guide's build block with the output sent to `site_dir`."""
    process = run_bash_block(
        BUILD_PAGE,
        BUILD_BLOCK,
        env={"AUDIT_DOCS_SITE_DIR": str(site_dir), "NO_MKDOCS_2_WARNING": "1"},
        timeout=timeout,
    )
    return BuiltSite(site_dir, process)


def page_url(page: str) -> str:
    """The site-relative URL of a page with mkdocs' directory URLs: `a/b.md` -> `a/b/`."""
    stem = page.removesuffix(".md")
    if stem == "index":
        return ""
    if stem.endswith("/index"):
        return stem.removesuffix("index")
    return stem + "/"
