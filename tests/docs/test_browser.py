"""Open the built site in headless Chromium, as a reader would.

Fails on any console error, any failed or refused request (the site must load nothing from
the network), a mermaid diagram that did not become an SVG, and a search for "circuit
breaker" that finds nothing once a page mentions it. Saves screenshots of the home page and
of each guide into `artifacts/screenshots/`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.docs.blocks import REPO_ROOT
from tests.docs.checks import load_mkdocs_config, nav_pages
from tests.docs.site import BuiltSite, page_url

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
    "--disable-quic",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
SEARCH_TERM = "circuit breaker"
RENDER_TIMEOUT_S = 20.0


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"no Chromium at {CHROMIUM}; install it with: apt-get install -y chromium"
    if os.environ.get("AUDIT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (AUDIT_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site_url(built_site: BuiltSite) -> Iterator[str]:
    """The built site, served on the loopback interface for the module's tests."""
    if not built_site.ok:
        pytest.fail("the site did not build; see test_build.py:\n" + built_site.log)
    handler = functools.partial(_QuietHandler, directory=str(built_site.site_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class PageProblems:
    """What went wrong while one page loaded."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [f"{self.url}: console error: {m}" for m in self.console_errors] + [
            f"{self.url}: request failed: {m}" for m in self.failed_requests
        ]


def _watch(page: Any, url: str) -> PageProblems:
    problems = PageProblems(url)
    page.on(
        "console",
        lambda msg: problems.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: problems.console_errors.append(str(exc)))
    page.on(
        "requestfailed",
        lambda req: problems.failed_requests.append(f"{req.url} ({req.failure})"),
    )
    page.on(
        "response",
        lambda resp: (
            problems.failed_requests.append(f"{resp.url} (HTTP {resp.status})")
            if resp.status >= 400
            else None
        ),
    )
    return problems


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children", []) + node.get("shadowRoots", []):
        yield from _walk(child)
    if "contentDocument" in node:
        yield from _walk(node["contentDocument"])


def _classes(node: dict[str, Any]) -> list[str]:
    attrs = node.get("attributes", [])
    pairs = dict(zip(attrs[::2], attrs[1::2], strict=False))
    return pairs.get("class", "").split()


def _rendered_diagrams(cdp: Any) -> tuple[int, int]:
    """(diagrams rendered to SVG, `pre.mermaid` blocks still unrendered) in the live DOM.

    The theme renders each diagram into a closed shadow root, which page scripts cannot
    read; the DevTools protocol can, with `pierce`.
    """
    root = cdp.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]
    rendered = unrendered = 0
    for node in _walk(root):
        if "mermaid" not in _classes(node):
            continue
        if node.get("nodeName") == "PRE":
            unrendered += 1
        elif node.get("nodeName") == "DIV":
            svgs = [
                n
                for shadow in node.get("shadowRoots", [])
                for n in _walk(shadow)
                if n.get("nodeName", "").lower() == "svg"
            ]
            if svgs and not any("error" in _classes(s) for s in svgs):
                rendered += 1
    return rendered, unrendered


def _expected_diagrams(built_site: BuiltSite, page: str) -> int:
    html = (built_site.site_dir / page_url(page) / "index.html").read_text(encoding="utf-8")
    return len(re.findall(r'<pre class="mermaid"', html))


def _screenshot_name(page: str) -> str | None:
    if page == "index.md":
        return "home.png"
    if page.startswith("guides/"):
        return "guides-" + page.removeprefix("guides/").removesuffix(".md") + ".png"
    return None


def test_every_page_loads_cleanly_and_renders_its_diagrams(
    browser: Any, site_url: str, built_site: BuiltSite
) -> None:
    pages = nav_pages(load_mkdocs_config(REPO_ROOT / "mkdocs.yml"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    diagrams_seen = 0
    try:
        for page_path in pages:
            url = site_url + page_url(page_path)
            page = context.new_page()
            watched = _watch(page, url)
            cdp = context.new_cdp_session(page)
            page.goto(url, wait_until="load")
            expected = _expected_diagrams(built_site, page_path)
            deadline = time.monotonic() + RENDER_TIMEOUT_S
            rendered, unrendered = _rendered_diagrams(cdp)
            while (rendered < expected or unrendered) and time.monotonic() < deadline:
                page.wait_for_timeout(200)
                rendered, unrendered = _rendered_diagrams(cdp)
            if rendered != expected or unrendered:
                problems.append(
                    f"{url}: {expected} mermaid diagram(s) on the page, {rendered} rendered "
                    f"to SVG, {unrendered} left as text"
                )
            diagrams_seen += rendered
            page.wait_for_load_state("networkidle")
            name = _screenshot_name(page_path)
            if name:
                page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
            problems.extend(watched.all())
            cdp.detach()
            page.close()
    finally:
        context.close()
    assert not problems, "\n".join(problems)
    assert diagrams_seen >= 1, "no mermaid diagram on the whole site was rendered"


def _site_mentions(built_site: BuiltSite, term: str) -> bool:
    index = json.loads(
        (built_site.site_dir / "search" / "search_index.json").read_text(encoding="utf-8")
    )
    return any(term in doc.get("text", "").lower() for doc in index["docs"])


def test_search_finds_circuit_breaker(browser: Any, site_url: str, built_site: BuiltSite) -> None:
    if not _site_mentions(built_site, SEARCH_TERM):
        pytest.skip(f"no page mentions {SEARCH_TERM!r} yet")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        watched = _watch(page, site_url)
        page.goto(site_url, wait_until="load")
        page.locator("label.md-search__icon, .md-search__input").first.click()
        # Typed key by key: the theme queries on key events, not on a programmatic fill.
        page.locator("input.md-search__input").press_sequentially(SEARCH_TERM, delay=20)
        results = page.locator(".md-search-result__item")
        results.first.wait_for(state="attached", timeout=int(RENDER_TIMEOUT_S * 1000))
        titles = results.all_inner_texts()
        assert titles, f"a search for {SEARCH_TERM!r} found nothing"
        assert not watched.all(), "\n".join(watched.all())
    finally:
        context.close()


def test_the_watchers_catch_what_they_must(browser: Any, site_url: str) -> None:
    """A page with an unrendered diagram, a console error and a refused request is caught."""
    context = browser.new_context()
    try:
        page = context.new_page()
        watched = _watch(page, "synthetic")
        cdp = context.new_cdp_session(page)
        # Loaded from the served site so that the page has an origin the requests count against.
        page.goto(site_url + "search/search_index.json")
        page.set_content(
            """
            <pre class="mermaid"><code>flowchart LR; a --> b</code></pre>
            <div class="mermaid" id="drawn"></div>
            <script>
              const root = document.getElementById("drawn").attachShadow({mode: "closed"});
              root.innerHTML = '<svg xmlns="http://www.w3.org/2000/svg"><g></g></svg>';
              console.error("boom");
            </script>
            """
        )
        with page.expect_response(lambda response: "no-such-file.js" in response.url):
            page.evaluate("fetch('/no-such-file.js').catch(() => null)")
        # Events reach the watchers asynchronously: wait for them (a slow machine may take a
        # while), and let the assertions below say what is missing.
        for _ in range(50):
            if "boom" in watched.console_errors and watched.failed_requests:
                break
            page.wait_for_timeout(100)
        assert _rendered_diagrams(cdp) == (1, 1)
        # Chromium also logs the 404 as a console error, in no fixed order with the script's.
        assert "boom" in watched.console_errors
        assert any("no-such-file.js (HTTP 404)" in f for f in watched.failed_requests)
    finally:
        context.close()
