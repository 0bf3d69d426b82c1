"""Expected failures of a CLI command, told in one sentence with a stable code.

A missing database, an unreachable API or broker, a bad setting or a bucket that does not
exist is the user's environment, not a bug: the command prints `error (code): sentence` and
exits 2 (1 when items failed), never a traceback. Anything not listed here is a bug and
keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from pydantic import ValidationError

from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from speechbatch.inputs import InputError
from storage.db import UnsupportedDatabaseUrl
from storage.objects import StorageUnavailable

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class CliFailure(Exception):
    """A command stopped for a reason the user can act on."""

    code: ErrorCode
    message: str
    exit_code: int = EXIT_BAD_INPUT

    def __str__(self) -> str:
        return f"error ({self.code}): {self.message}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _target(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # raised without a request
        return "the API"
    return f"{url.scheme}://{url.netloc.decode()}"


def _setting_error(exc: ValidationError) -> CliFailure:
    problems = []
    for error in exc.errors():
        name = "SPEECHBATCH_" + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return CliFailure(ErrorCode.INVALID_CONFIGURATION, "; ".join(problems) + ".")


def _api(exc: ApiError) -> CliFailure:
    return CliFailure(
        exc.code, exc.message, EXIT_BAD_INPUT if exc.status < 500 else EXIT_ITEMS_FAILED
    )


def _unreachable_api(exc: httpx.TransportError) -> CliFailure:
    return CliFailure(
        ErrorCode.API_UNREACHABLE,
        f"cannot reach {_target(exc)} ({type(exc).__name__}: {_first_line(exc)}); "
        "check SPEECHBATCH_API_URL and that `speechbatch api` is running.",
    )


def _database(exc: sqlalchemy.exc.SQLAlchemyError) -> CliFailure:
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else None
    return CliFailure(
        ErrorCode.DATABASE_UNAVAILABLE,
        f"cannot use the database ({_first_line(orig or exc)}); check SPEECHBATCH_DATABASE_URL.",
    )


def _broker(exc: Exception) -> CliFailure:
    return CliFailure(
        ErrorCode.BROKER_UNAVAILABLE,
        f"cannot reach the broker ({_first_line(exc)}); check SPEECHBATCH_BROKER_URL.",
    )


def _storage(exc: StorageUnavailable) -> CliFailure:
    return CliFailure(
        ErrorCode.STORAGE_UNAVAILABLE,
        f"{_first_line(exc).rstrip('.')}; check SPEECHBATCH_STORAGE_URL "
        "(`speechbatch migrate` creates a missing bucket).",
    )


# Checked in order: the first matching type explains the exception.
TRANSLATIONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Any], ...] = (
    (CliFailure, lambda exc: exc),
    (ApiError, _api),
    (InputError, lambda exc: CliFailure(ErrorCode.INVALID_REQUEST, str(exc))),
    (
        UnsupportedDatabaseUrl,
        lambda exc: CliFailure(ErrorCode.INVALID_CONFIGURATION, f"SPEECHBATCH_DATABASE_URL: {exc}"),
    ),
    (httpx.TransportError, _unreachable_api),
    ((sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError), _database),
    ((redis.exceptions.ConnectionError, kombu.exceptions.OperationalError), _broker),
    (StorageUnavailable, _storage),
)


def explain(exc: BaseException) -> CliFailure | None:
    """The one-sentence failure for an expected exception, or None for a bug."""
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return _setting_error(exc)
    for types, translate in TRANSLATIONS:
        if isinstance(exc, types):
            failure: CliFailure = translate(exc)
            return failure
    return None
