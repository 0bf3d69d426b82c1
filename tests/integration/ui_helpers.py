"""Helpers for the dashboard's integration tests: log in through the form, read the CSRF
token a page carries, and post a button the way the browser does."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update

from jobs.models import Item
from tests.integration.test_api import Api

ORIGIN = "http://testserver"  # TestClient's host: what a browser on the page sends
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def login(api: Api, key: str | None = None) -> Any:
    """POST the login form as the browser does (with Origin); returns the response."""
    return api.client.post(
        "/ui/login",
        data={"key": key or api.key},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )


def csrf_of(api: Api, path: str = "/ui/") -> str:
    """The CSRF token the page at `path` embeds in its forms."""
    page = api.client.get(path)
    assert page.status_code == 200, page.text
    found = _CSRF.search(page.text)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def press(api: Api, action: str, csrf: str | None, origin: str | None = ORIGIN) -> Any:
    """POST a dashboard button's form."""
    headers = {"Origin": origin} if origin else {}
    data = {"csrf": csrf} if csrf is not None else {}
    return api.client.post(action, data=data, headers=headers, follow_redirects=False)


def submit(api: Api, n: int, sources: list[str] | None = None) -> str:
    """A TTS job of `n` lines (`line-001`...), or an STT job of `sources` when given."""
    if sources is None:
        items = [{"id": f"line-{i:03d}", "text": f"line {i}"} for i in range(1, n + 1)]
        body: dict[str, Any] = {"kind": "tts", "provider": "slng", "items": items}
    else:
        items = [{"id": f"rec-{i:03d}", "source": s} for i, s in enumerate(sources, 1)]
        body = {"kind": "stt", "provider": "slng", "items": items}
    response = api.post_job(body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def set_items(api: Api, job_id: str, seqs: range | list[int], **values: Any) -> None:
    """Put items into a state directly, as a worker's ledger would have."""
    with api.resources.sessions() as session:
        session.execute(
            update(Item).where(Item.job_id == job_id, Item.seq.in_(list(seqs))).values(**values)
        )
        session.commit()


def item_seqs(api: Api, job_id: str) -> list[int]:
    with api.resources.sessions() as session:
        return list(session.scalars(select(Item.seq).where(Item.job_id == job_id)))
