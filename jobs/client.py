"""How the CLI reaches speechbatch: over HTTP (`SPEECHBATCH_API_URL` set) or in-process.

Both backends speak the API's JSON shapes, so the commands in `jobs/cli_jobs.py` do not
care which one they hold. The local backend runs the worker pipeline in threads on the
embedded defaults (SQLite, a local directory, the offline `local` engine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from jobs import repository as repo
from jobs import service
from jobs.errors import ApiError
from jobs.media import sniff_audio
from jobs.netpolicy import parse_allowlist
from jobs.schemas import JobCreate
from jobs.settings import Settings
from jobs.views import item_view, job_view

LOCAL_TENANT = "local"


class Backend(Protocol):
    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]: ...
    def upload(self, path: Path) -> str: ...
    def get_job(self, job_id: str) -> dict[str, Any]: ...
    def list_jobs(self, limit: int) -> list[dict[str, Any]]: ...
    def items(self, job_id: str) -> Iterator[dict[str, Any]]: ...
    def cancel(self, job_id: str) -> dict[str, Any]: ...
    def retry(self, job_id: str) -> dict[str, Any]: ...
    def fetch(self, url_or_key: str) -> Iterator[bytes]: ...
    def close(self) -> None: ...


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ApiError(response.status_code, error["code"], error["message"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:300]) from None


class HttpBackend:
    """Talks to a speechbatch API with a bearer key."""

    def __init__(self, api_url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=60.0)
        self.plain = httpx.Client(timeout=60.0)  # presigned URLs must not carry our key

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self.client.request(method, path, **kw)
        _raise_for(response)
        return response.json()

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._json("POST", "/v1/jobs", json=body, headers=headers)
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

    def close(self) -> None:
        self.client.close()
        self.plain.close()


class LocalBackend:
    """Runs everything in this process on the embedded defaults; no server needed."""

    def __init__(self, settings: Settings, *, concurrency: int = 4) -> None:
        from jobs.migrate import upgrade_to_head
        from workers.local import LocalRunner  # lazy: jobs/ does not depend on workers/
        from workers.runtime import build_runtime

        upgrade_to_head(settings.database_url)
        self.settings = settings
        self.runner = LocalRunner(concurrency)
        self.runtime = build_runtime(settings, self.runner.publish, pool_size=concurrency)
        self.runner.start(self.runtime)
        self.sessions = self.runtime.sessions
        self.store = self.runtime.store
        self.tenant_id = service.ensure_tenant(self.sessions, LOCAL_TENANT).id

    def _view(self, job_id: str) -> dict[str, Any]:
        return job_view(service.get_job(self.sessions, self.tenant_id, job_id)).model_dump(
            mode="json"
        )

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        submitted = service.submit_job(
            self.sessions,
            self.tenant_id,
            JobCreate.model_validate(body),
            idempotency_key=idempotency_key,
            publish=self.runner.publish,
            max_items=self.settings.max_items_per_job,
            allow=parse_allowlist(self.settings.allow_private_networks),
        )
        return self._view(submitted.job.id)

    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            head = handle.read(64)
            if not head:
                raise ApiError(400, "empty_file", f"{path} is empty.")
            content_type = sniff_audio(head)
            if content_type is None:
                raise ApiError(
                    415, "unsupported_audio", f"{path} is not an audio file we recognise."
                )
            handle.seek(0)
            source, _ = service.store_upload(
                self.store, self.tenant_id, path.name, handle, content_type
            )
        return source

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._view(job_id)

    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        with self.sessions() as session:
            jobs = repo.list_jobs(
                session, self.tenant_id, status=None, kind=None, limit=limit, before=None
            )
        return [job_view(j).model_dump(mode="json") for j in jobs]

    def items(self, job_id: str) -> Iterator[dict[str, Any]]:
        job = service.get_job(self.sessions, self.tenant_id, job_id)
        with self.sessions() as session:
            for item in repo.iter_items(session, job_id):
                yield item_view(job, item, lambda key, _item: key).model_dump(mode="json")

    def cancel(self, job_id: str) -> dict[str, Any]:
        service.cancel_job(self.sessions, self.store, self.tenant_id, job_id)
        return self._view(job_id)

    def retry(self, job_id: str) -> dict[str, Any]:
        service.retry_job(self.sessions, self.tenant_id, job_id, publish=self.runner.publish)
        return self._view(job_id)

    def fetch(self, url_or_key: str) -> Iterator[bytes]:
        yield from self.store.iter_chunks(url_or_key)

    def close(self) -> None:
        self.runner.stop()
        with contextlib.suppress(Exception):
            self.runtime.close()


def open_backend(settings: Settings, *, concurrency: int = 4) -> Backend:
    if settings.api_url:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return HttpBackend(settings.api_url, key)
    return LocalBackend(settings, concurrency=concurrency)
