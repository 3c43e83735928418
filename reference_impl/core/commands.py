"""What every `auditkit` command shares: one-line errors, settings, running backends.

Domain packages define their own commands (`<domain>/commands.py`) on top of these, and
`reference_impl/cli.py` mounts them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

from reference_impl.core.backends import running_backends
from reference_impl.core.settings import Settings, SettingsError, get_settings
from reference_impl.core.state import with_dev_secrets

__all__ = ["backends", "console", "database_url", "err_console", "fail", "load_settings"]

# Piped output (files, other programs) gets wide lines rather than 80-column wrapping.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit: the CLI's form of a problem."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (plus non-None overrides), checked for the profile."""
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        settings: Settings = with_dev_secrets(get_settings(**given))
        settings.check()
    except (SettingsError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    return settings


@contextmanager
def backends(settings: Settings) -> Iterator[Settings]:
    """Settings with backend URLs resolved, embedded servers running while the block runs."""
    try:
        with running_backends(settings) as resolved:
            yield resolved
    except SettingsError as exc:
        fail(str(exc))


def database_url(settings: Settings) -> str:
    """The resolved database URL."""
    assert settings.database_url is not None
    return settings.database_url.get_secret_value()
