"""How the committer reads a failed transaction: a bad row, or a database to retry."""

from __future__ import annotations

import asyncpg
import pytest

from reference_impl.core.errors import AuditError, ConflictError, DatabaseUnavailableError
from reference_impl.events.ingest import _as_problem, _blames_a_row


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.CheckViolationError("check failed"),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00"),
    ],
)
def test_data_errors_of_the_driver_blame_a_row(error: Exception) -> None:
    # Class 22 and 23: the batch is split so that only the request with the row fails.
    assert _blames_a_row(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        TimeoutError(),
        ValueError("not a database error"),
    ],
)
def test_server_and_connection_errors_blame_no_row(error: Exception) -> None:
    assert not _blames_a_row(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_driver_errors_become_a_retryable_unavailable_store(error: Exception) -> None:
    problem = _as_problem(error)
    assert isinstance(problem, DatabaseUnavailableError)
    assert problem.retry_after is not None


def test_problems_pass_through_and_unknown_errors_stay_generic() -> None:
    conflict = ConflictError("reused event_id")
    assert _as_problem(conflict) is conflict
    unknown = _as_problem(ValueError("bug"))
    assert type(unknown) is AuditError
