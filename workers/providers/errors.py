"""The one error tree every provider adapter maps its failures onto.

    ProviderError                      code, message, status_code, request_id
    ├── TransientProviderError         worth retrying later
    │   ├── RateLimited                429 / concurrency cap; carries retry_after (seconds)
    │   ├── ProviderUnavailable        5xx, connection refused or reset
    │   └── ProviderTimeout            no (complete) answer in time
    └── PermanentProviderError         retrying cannot help: fail the item and say why
        ├── InvalidInput               the provider (or our pre-check) rejected the request
        ├── AuthenticationFailed       missing/wrong credential: stop the job's calls
        ├── QuotaExceeded              out of credit / quota: stop the job's calls
        └── UnsupportedAudio           the source is not audio the provider can read

`code` is a stable `jobs.error_codes.ErrorCode` users and tests can match on; `message` is a
sentence that says what went wrong and what to do.
"""

from __future__ import annotations

from jobs.error_codes import ErrorCode


class ProviderError(Exception):
    """Base of every provider failure."""

    code: ErrorCode = ErrorCode.PROVIDER_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status_code = status_code
        self.request_id = request_id


class TransientProviderError(ProviderError):
    code = ErrorCode.PROVIDER_TRANSIENT


class RateLimited(TransientProviderError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailable(TransientProviderError):
    code = ErrorCode.PROVIDER_UNAVAILABLE


class ProviderTimeout(TransientProviderError):
    code = ErrorCode.PROVIDER_TIMEOUT


class PermanentProviderError(ProviderError):
    code = ErrorCode.PROVIDER_REJECTED


class InvalidInput(PermanentProviderError):
    code = ErrorCode.INVALID_INPUT


class AuthenticationFailed(PermanentProviderError):
    code = ErrorCode.PROVIDER_AUTH_FAILED


class QuotaExceeded(PermanentProviderError):
    code = ErrorCode.PROVIDER_QUOTA_EXCEEDED


class UnsupportedAudio(PermanentProviderError):
    code = ErrorCode.UNSUPPORTED_AUDIO
