"""The layering rules of DESIGN.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reference_impl"
DOMAINS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(domain: str) -> list[Path]:
    return sorted((PACKAGE / domain).rglob("*.py"))


@pytest.mark.parametrize("domain", [d for d in DOMAINS if d != "api"])
def test_no_domain_imports_api(domain: str) -> None:
    for module in _modules(domain):
        bad = {n for n in _imports(module) if n.startswith("reference_impl.api")}
        assert not bad, f"{module.relative_to(PACKAGE)} imports {bad}"


def test_core_imports_no_domain() -> None:
    for module in _modules("core"):
        bad = {
            n
            for n in _imports(module)
            if n.startswith("reference_impl.") and not n.startswith("reference_impl.core")
        }
        assert not bad, f"{module.relative_to(PACKAGE)} imports {bad}"


def test_integrity_is_pure() -> None:
    forbidden = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "redis", "reference_impl.core")
    for module in _modules("integrity"):
        bad = {n for n in _imports(module) if n.startswith(forbidden)}
        assert not bad, f"{module.relative_to(PACKAGE)} imports {bad}"


def test_routes_hold_no_sql() -> None:
    routes = sorted(PACKAGE.rglob("endpoints.py"))
    assert routes
    for module in routes:
        sql = {
            n
            for n in _imports(module)
            if n.startswith("sqlalchemy") and n != "sqlalchemy.ext.asyncio"
        }
        assert not sql, f"{module.relative_to(PACKAGE)} imports {sql}"
