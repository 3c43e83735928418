"""`mkdocs build --strict` succeeds: every snippet, link, anchor and cross-reference resolves."""

from __future__ import annotations

import pytest

from tests.docs.blocks import REPO_ROOT
from tests.docs.checks import load_mkdocs_config, nav_pages
from tests.docs.site import BuiltSite, page_url

pytestmark = pytest.mark.docs


def _require_build(site: BuiltSite) -> None:
    if not site.ok:
        pytest.fail("the site did not build; see test_strict_build_succeeds:\n" + site.log)


def test_strict_build_succeeds(built_site: BuiltSite) -> None:
    assert built_site.ok, "mkdocs build --strict failed:\n" + built_site.log


def test_every_nav_page_is_rendered(built_site: BuiltSite) -> None:
    _require_build(built_site)
    pages = nav_pages(load_mkdocs_config(REPO_ROOT / "mkdocs.yml"))
    missing = [p for p in pages if not (built_site.site_dir / page_url(p) / "index.html").is_file()]
    assert not missing, f"pages not rendered: {missing}"


def test_mermaid_is_served_with_the_site(built_site: BuiltSite) -> None:
    _require_build(built_site)
    vendored = built_site.site_dir / "assets" / "javascripts" / "mermaid.min.js"
    assert vendored.stat().st_size > 1_000_000
    home = (built_site.site_dir / "index.html").read_text(encoding="utf-8")
    assert 'src="assets/javascripts/mermaid.min.js"' in home
    # The theme fetches mermaid from a CDN only when no global `mermaid` is loaded.
    assert "unpkg.com" not in home


def test_page_url() -> None:
    assert page_url("index.md") == ""
    assert page_url("guides/error-handling.md") == "guides/error-handling/"
    assert page_url("architecture/index.md") == "architecture/"
