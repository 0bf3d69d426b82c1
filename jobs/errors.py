"""Errors the front door reports: a stable `code` (`jobs.error_codes`), an HTTP status and
a sentence. Every rejected request becomes `{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

from jobs.error_codes import ErrorCode
from jobs.media import AudioRejected


class ApiError(Exception):
    """A request we refuse, and why."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(code: ErrorCode, message: str) -> ApiError:
    """A request whose content is wrong (422)."""
    return ApiError(422, code, message)


def not_found(what: str) -> ApiError:
    """Absent, or belonging to another tenant: the two are indistinguishable on purpose."""
    return ApiError(404, ErrorCode.NOT_FOUND, f"No {what} with that id exists for this API key.")


def bad_cursor() -> ApiError:
    """A list's `cursor` that this API did not issue (or that is garbled)."""
    return ApiError(
        400,
        ErrorCode.INVALID_CURSOR,
        "The cursor is not one this API issued; pass `next_cursor` from the previous page.",
    )


def conflict(code: ErrorCode, message: str) -> ApiError:
    return ApiError(409, code, message)


def refused_upload(rejected: AudioRejected) -> ApiError:
    """An upload that is not audio: 400 when empty, 415 when the bytes are something else."""
    status = 400 if rejected.code == ErrorCode.EMPTY_AUDIO else 415
    return ApiError(status, rejected.code, rejected.message)
