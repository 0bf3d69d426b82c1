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

`code` is a stable snake_case string users and tests can match on; `message` is a sentence
that says what went wrong and what to do.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider failure."""

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
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
    code = "provider_transient"


class RateLimited(TransientProviderError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailable(TransientProviderError):
    code = "provider_unavailable"


class ProviderTimeout(TransientProviderError):
    code = "provider_timeout"


class PermanentProviderError(ProviderError):
    code = "provider_rejected"


class InvalidInput(PermanentProviderError):
    code = "invalid_input"


class AuthenticationFailed(PermanentProviderError):
    code = "provider_auth_failed"


class QuotaExceeded(PermanentProviderError):
    code = "provider_quota_exceeded"


class UnsupportedAudio(PermanentProviderError):
    code = "unsupported_audio"
