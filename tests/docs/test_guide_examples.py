"""The blocks and tables of the guides say what the code does.

Each block with an id on a guide is fetched here and checked against the service's own
code: request bodies are parsed by the real validator, problem bodies are built by the real
error classes and response helper, configuration blocks are run in bash and read by the real
`Settings`. Tables that restate facts of the code (problem types, setting defaults,
profiles, pytest markers) are compared with the code.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from reference_impl.api.app import create_app
from reference_impl.api.problems import problem_response
from reference_impl.core.errors import TAXONOMY, ValidationFailedError, problem_types
from reference_impl.core.settings import Profile, Settings, SettingsError
from reference_impl.events.validation import parse_event
from reference_impl.integrity import KeyRing
from reference_impl.observability.logging import correlation_id
from tests.docs.blocks import DOCS_DIR, REPO_ROOT, docs_block, iter_pages, parse_blocks

pytestmark = pytest.mark.docs

ERRORS = "guides/error-handling.md"
TESTING = "guides/testing-strategies.md"
DEPLOY = "guides/deployment-patterns.md"
MIGRATION = "guides/migration-guide.md"
GUIDES = (ERRORS, TESTING, DEPLOY, MIGRATION)
SKELETON = [
    "Overview and principles",
    "Implementation patterns",
    "Configuration examples",
    "Troubleshooting",
    "Best practices",
    "Monitoring and alerting",
]


@pytest.fixture(autouse=True)
def _no_audit_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read `AUDIT_*` from the environment; these tests set what they mean."""
    import os

    for name in list(os.environ):
        if name.startswith("AUDIT_"):
            monkeypatch.delenv(name)


def _page(page: str) -> str:
    return (DOCS_DIR / page).read_text(encoding="utf-8")


def _prose(page: str) -> list[str]:
    """Lines of a page outside fenced blocks."""
    text = _page(page)
    lines = text.splitlines()
    for block in parse_blocks(text, page):
        for i in range(block.line - 1, block.line + len(block.source.splitlines()) + 1):
            lines[i] = ""
    return lines


def _table_rows(page: str) -> list[list[str]]:
    rows = []
    for line in _prose(page):
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _exported(code: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The `AUDIT_*` variables a bash block exports, as bash leaves them."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code + "\nenv -0"],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=True,
        timeout=30,
    )
    pairs = (item.split(b"=", 1) for item in result.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"AUDIT_")}


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# ------------------------------------------------------------------------------ the skeleton


@pytest.mark.parametrize("page", GUIDES)
def test_guides_follow_the_six_section_skeleton(page: str) -> None:
    headings = [line[3:].strip() for line in _prose(page) if line.startswith("## ")]
    assert headings == SKELETON


# --------------------------------------------------------------------------- error handling


def test_early_event_gets_the_problem_the_guide_shows() -> None:
    raw = docs_block(ERRORS, "eh-early-event").encode()
    shown = json.loads(docs_block(ERRORS, "eh-early-problem"))
    now = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)  # the moment the guide names
    with pytest.raises(ValidationFailedError) as caught:
        parse_event(raw, Settings(), now=now)

    request = Request({"type": "http", "method": "POST", "path": shown["instance"], "headers": []})
    token = correlation_id.set(shown["correlation_id"])
    try:
        response = problem_response(request, caught.value.problem(), caught.value.headers)
    finally:
        correlation_id.reset(token)
    assert response.status_code == shown["status"]
    assert response.media_type == "application/problem+json"
    assert json.loads(bytes(response.body)) == shown


def test_early_event_is_valid_at_the_source_clock() -> None:
    """The guide's event fails on its clock only: at its own time it is accepted."""
    raw = docs_block(ERRORS, "eh-early-event").encode()
    prepared = parse_event(raw, Settings(), now=datetime(2026, 1, 15, 9, 10, tzinfo=UTC))
    assert str(prepared.event_id) == json.loads(raw)["event_id"]


def test_the_problem_instance_is_the_ingest_route() -> None:
    shown = json.loads(docs_block(ERRORS, "eh-early-problem"))
    paths = create_app(Settings()).openapi()["paths"]
    assert "post" in paths.get(shown["instance"], {}), sorted(paths)


def test_classification_table_is_the_taxonomy() -> None:
    rows = [
        tuple(cell.strip("`") for cell in row[:7])
        for row in _table_rows(ERRORS)
        if row[0].startswith("`urn:auditkit:problem:")
    ]
    assert rows == [
        (
            spec.type_uri,
            spec.category.value,
            spec.kind,
            str(spec.status),
            spec.severity.value,
            spec.recovery.value,
            spec.monitoring.value,
        )
        for spec in TAXONOMY
    ]


def test_every_problem_class_is_in_the_taxonomy() -> None:
    slugs = [spec.slug for spec in TAXONOMY]
    assert len(slugs) == len(set(slugs))
    assert {cls.slug for cls in problem_types()} == set(slugs)


def test_bounds_block_is_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _exported(docs_block(ERRORS, "eh-bounds-env"))
    assert env == {"AUDIT_MAX_EVENT_AGE_DAYS": "90", "AUDIT_MAX_FUTURE_SKEW_S": "60"}
    settings = _settings_from(env, monkeypatch)
    assert (settings.max_event_age_days, settings.max_future_skew_s) == (90, 60)


# ---------------------------------------------------------------------- deployment patterns


def test_production_block_passes_the_strict_check(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(_exported(docs_block(DEPLOY, "dp-prod-env")), monkeypatch)
    settings.check()
    assert settings.profile is Profile.prod
    assert not settings.uses_embedded_servers
    assert settings.active_signing_key == "k2026-01"
    assert len(settings.signing_secrets["k2026-01"]) == 32


def test_rotation_block_keeps_old_signatures_verifying(monkeypatch: pytest.MonkeyPatch) -> None:
    before_env = _exported(docs_block(DEPLOY, "dp-prod-env"))
    before = Settings(**_settings_kwargs(before_env))
    old_secret = json.loads(before_env["AUDIT_SIGNING_KEYS"])["k2026-01"]
    after_env = _exported(
        docs_block(DEPLOY, "dp-prod-env") + docs_block(DEPLOY, "dp-rotate-key"),
        env={"OLD_SECRET": old_secret},
    )
    after = _settings_from(after_env, monkeypatch)
    after.check()
    assert after.active_signing_key == "k2026-07"
    assert after.signing_secrets["k2026-01"] == before.signing_secrets["k2026-01"]

    chain_hash = bytes(range(32))
    key_id, signature = KeyRing(before.signing_secrets, before.active_signing_key or "").sign(
        chain_hash
    )
    rotated = KeyRing(after.signing_secrets, after.active_signing_key or "")
    assert key_id == "k2026-01"
    assert rotated.verify(key_id, chain_hash, signature)
    assert rotated.sign(chain_hash)[0] == "k2026-07"


def _settings_kwargs(env: dict[str, str]) -> dict[str, object]:
    fields = Settings.model_fields
    out: dict[str, object] = {}
    for name, value in env.items():
        field = name.removeprefix("AUDIT_").lower()
        assert field in fields, name
        out[field] = json.loads(value) if field in {"signing_keys", "checkpoint_keys"} else value
    return out


def test_debug_in_prod_is_refused_with_the_message_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _exported(docs_block(DEPLOY, "dp-prod-env")) | {"AUDIT_DEBUG": "true"}
    settings = _settings_from(env, monkeypatch)
    with pytest.raises(SettingsError) as refused:
        settings.check()
    assert str(refused.value) == docs_block(DEPLOY, "dp-refused-debug").strip()


_SECRET = "a2V5LW1hdGVyaWFsLWZvci10ZXN0cy1vbmx5LTEyMzQ1Njc4OQ=="  # 36 bytes
_PROD = {
    "profile": "prod",
    "database_url": "postgresql://db.internal/auditkit",
    "redis_url": "redis://queue.internal/0",
    "signing_keys": {"k2026-01": _SECRET},
    "active_signing_key": "k2026-01",
    "api_key_pepper": _SECRET,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"database_url": None},
            "profile prod refuses the embedded database: set AUDIT_DATABASE_URL",
        ),
        ({"redis_url": None}, "profile prod refuses the embedded Valkey: set AUDIT_REDIS_URL"),
        (
            {"signing_keys": {}, "active_signing_key": None},
            "profile prod needs AUDIT_SIGNING_KEYS and AUDIT_ACTIVE_SIGNING_KEY",
        ),
        (
            {"signing_keys": {"dev-1": _SECRET}, "active_signing_key": "dev-1"},
            "profile prod refuses development signing key 'dev-1'",
        ),
        (
            {"active_signing_key": "k2025-12"},
            "AUDIT_ACTIVE_SIGNING_KEY must name one of AUDIT_SIGNING_KEYS",
        ),
        ({"signing_keys": {"k2026-01": "c2hvcnQ="}}, "secret 'k2026-01' is shorter than 32 bytes"),
    ],
)
def test_troubleshooting_messages_are_the_ones_raised(
    change: dict[str, object], message: str
) -> None:
    assert f"| `{message}` |" in _page(DEPLOY)
    settings = Settings(**(_PROD | change))  # type: ignore[arg-type]
    with pytest.raises(SettingsError) as refused:
        settings.check()
    assert str(refused.value) == message


def test_profile_table_matches_the_profiles() -> None:
    rows = [row for row in _table_rows(DEPLOY) if re.fullmatch(r"`[a-z]+`", row[0])]
    by_profile = {row[0].strip("`"): row for row in rows if row[0].strip("`") in set(Profile)}
    assert set(by_profile) == {p.value for p in Profile}
    for name, row in by_profile.items():
        profile = Profile(name)
        assert (row[1] == "refused") == profile.is_strict, row
        assert row[2].startswith("yes") == Settings(profile=profile).auto_migrate, row


# ---------------------------------------------------------------- settings named on the site

# Variables the site names that are not service settings, and the file that reads each.
NOT_SETTINGS = {
    "AUDIT_TEST_DATABASE_URL": "tests/support/backends.py",
    "AUDIT_TEST_REDIS_URL": "tests/support/backends.py",
    "AUDIT_TEST_BACKEND": "tests/support/backends.py",
    "AUDIT_REQUIRE_BROWSER": "tests/docs/test_browser.py",
    "AUDIT_DOCS_SITE_DIR": "mkdocs.yml",
}


def test_every_audit_variable_on_the_site_exists() -> None:
    fields = {f"AUDIT_{name.upper()}" for name in Settings.model_fields}
    named = {
        match
        for page in iter_pages()
        for match in re.findall(r"\bAUDIT_[A-Z0-9_]*[A-Z0-9]\b", _page(page))
    }
    unknown = sorted(named - fields - set(NOT_SETTINGS))
    assert not unknown, f"the site names variables nothing reads: {unknown}"
    for name, reader in NOT_SETTINGS.items():
        if name in named:
            assert name in (REPO_ROOT / reader).read_text(encoding="utf-8"), (name, reader)


@pytest.mark.parametrize("page", [ERRORS, DEPLOY])
def test_setting_defaults_in_tables_are_the_real_defaults(page: str) -> None:
    fields = Settings.model_fields
    checked = 0
    for row in _table_rows(page):
        names = re.findall(r"`(AUDIT_[A-Z0-9_]+)`", row[0])
        if not names or len(row) < 2 or not re.fullmatch(r"[\d., ]+", row[1]):
            continue
        defaults = [d.strip() for d in row[1].split(",")]
        assert len(defaults) == len(names), row
        for name, shown in zip(names, defaults, strict=True):
            real = fields[name.removeprefix("AUDIT_").lower()].default
            assert float(real) == float(shown), (name, real, shown)
            checked += 1
    assert checked >= 5


# ----------------------------------------------------------------------- testing strategies


def test_marker_table_matches_pyproject() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {
        name.strip(): text.strip()
        for name, text in (
            m.split(":", 1) for m in config["tool"]["pytest"]["ini_options"]["markers"]
        )
    }
    shown = {
        row[0].strip("`"): row[1] for row in _table_rows(TESTING) if re.fullmatch(r"`\w+`", row[0])
    }
    shown.pop("marker", None)
    assert shown == declared


def test_guide_example_page_block_is_a_page_with_blocks() -> None:
    """The example shown in the guide parses into the blocks the guide describes."""
    blocks = parse_blocks(docs_block(TESTING, "ts-example-page"), "example.md")
    assert [(b.lang, b.block_id, b.includes is not None) for b in blocks] == [
        ("bash", "example-build", False),
        ("bash", None, False),
        ("python", None, True),
    ]


def test_site_dir_variable_is_the_one_mkdocs_reads() -> None:
    assert "!ENV [AUDIT_DOCS_SITE_DIR, site]" in (REPO_ROOT / "mkdocs.yml").read_text(
        encoding="utf-8"
    )
