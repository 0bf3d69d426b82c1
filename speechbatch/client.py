"""How the CLI reaches speechbatch: over HTTP (`SPEECHBATCH_API_URL` set) or in-process.

Both backends speak the API's JSON shapes, so the commands in `speechbatch/cli_jobs.py` do
not care which one they hold. The local backend (`speechbatch/local.py`) runs the worker
pipeline in threads on the embedded defaults (SQLite, a local directory, the `local` engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.settings import Settings
from speechbatch.local import LocalBackend, local_mode_description


class Backend(Protocol):
    # Where jobs go, for headers and --help: "API at URL" or "local mode, state in DIR".
    where: str

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]: ...
    def dry_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Items, usage and cost estimate of `body`, checked as a submit; nothing created."""

    def upload(self, path: Path) -> str: ...
    def get_job(self, job_id: str) -> dict[str, Any]: ...
    def list_jobs(self, limit: int) -> list[dict[str, Any]]: ...
    def items(self, job_id: str) -> Iterator[dict[str, Any]]: ...
    def cancel(self, job_id: str) -> dict[str, Any]: ...
    def retry(self, job_id: str) -> dict[str, Any]: ...
    def fetch(self, url_or_key: str) -> Iterator[bytes]: ...
    def start_work(self, job_id: str, *, resume: bool) -> None:
        """Make sure something runs the job's items while this command follows it."""

    def detach(self, job_id: str) -> None:
        """Make sure the job's items still run after this command returns."""

    def close(self) -> None: ...


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        # A code this CLI does not know (a newer server) still reports its message.
        code = ErrorCode(error["code"])
        raise ApiError(response.status_code, code, str(error["message"]))
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, ErrorCode.HTTP_ERROR, response.text[:300]) from None


class HttpBackend:
    """Talks to a speechbatch API with a bearer key."""

    def __init__(
        self, api_url: str, api_key: str | None, *, client: httpx.Client | None = None
    ) -> None:
        """`client` replaces the API connection (tests pass an in-process one)."""
        self.where = f"API at {api_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(base_url=api_url.rstrip("/"), timeout=60.0)
        self.client.headers.update(headers)
        self.plain = httpx.Client(timeout=60.0)  # presigned URLs must not carry our key

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self.client.request(method, path, **kw)
        _raise_for(response)
        return response.json()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """Any API call beyond jobs (`speechbatch schedules`): its JSON, None for a 204."""
        response = self.client.request(method, path, **kw)
        _raise_for(response)
        return None if response.status_code == 204 else response.json()

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._json("POST", "/v1/jobs", json=body, headers=headers)
        return result

    def dry_run(self, body: dict[str, Any]) -> dict[str, Any]:
        params = {"dry_run": "true"}
        result: dict[str, Any] = self._json("POST", "/v1/jobs", json=body, params=params)
        return result

    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            result = self._json("POST", "/v1/uploads", files={"file": (path.name, handle)})
        return str(result["source"])

    def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/jobs/{job_id}")
        return result

    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/jobs", params={"limit": limit})["jobs"])

    def items(self, job_id: str) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = self._json("GET", f"/v1/jobs/{job_id}/items", params=params)
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    def retry(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/jobs/{job_id}/retry")
        return result

    def fetch(self, url_or_key: str) -> Iterator[bytes]:
        client = self.client if url_or_key.startswith("/") else self.plain
        with client.stream("GET", url_or_key) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            yield from response.iter_bytes()

    def start_work(self, job_id: str, *, resume: bool) -> None:
        """The server's workers run it."""

    def detach(self, job_id: str) -> None:
        """The server's workers run it."""

    def close(self) -> None:
        self.client.close()
        self.plain.close()


def describe_mode(settings: Settings) -> str:
    """Where the CLI sends jobs with these settings, in a few words."""
    if settings.api_url:
        return f"API at {settings.api_url}"
    return local_mode_description(settings)


def open_backend(settings: Settings, *, concurrency: int = 4) -> Backend:
    if settings.api_url:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return HttpBackend(settings.api_url, key)
    return LocalBackend(settings, concurrency=concurrency)
