"""Errors the front door reports: a stable `code`, an HTTP status and a sentence.

Every rejected request becomes `{"error": {"code": ..., "message": ...}}`. The codes are
part of the API contract: clients and tests match on them, so never rename one.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request we refuse, and why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(code: str, message: str) -> ApiError:
    """A request whose content is wrong (422)."""
    return ApiError(422, code, message)


def not_found(what: str) -> ApiError:
    """Absent, or belonging to another tenant: the two are indistinguishable on purpose."""
    return ApiError(404, "not_found", f"No {what} with that id exists for this API key.")


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)
