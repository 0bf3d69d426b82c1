"""The dashboard's session: the tenant's API key in a cookie, and CSRF for every button.

The cookie holds `<nonce>.<key>` (HttpOnly, SameSite=Strict, Path=/ui, Secure over https);
the key is checked on every request by the same cached lookup as `Authorization: Bearer`
(`jobs.api.deps.KeyCache`). The CSRF token of a session is an HMAC of its nonce keyed by
its API key: only a page that was served the token can send it (the cookie is HttpOnly),
every API process behind a balancer computes the same token without a shared secret, and
each login gets a new one. A POST also needs an Origin (or Referer) naming this host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from jobs.api.deps import Res
from jobs.errors import ApiError

COOKIE = "speechbatch_ui"
COOKIE_PATH = "/ui"
MAX_COOKIE_CHARS = 512  # a nonce, a dot and a key (~50 characters) fit many times over
_CSRF_CONTEXT = b"speechbatch-ui-csrf:"


class LoginRequired(Exception):
    """No valid session: pages redirect to /ui/login, live endpoints answer 401."""


class CsrfRefused(Exception):
    """A POST without this session's token, or from another site: 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class UiSession:
    tenant_id: str
    key: str
    nonce: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.key, self.nonce)


def csrf_token(key: str, nonce: str) -> str:
    return hmac.new(key.encode(), _CSRF_CONTEXT + nonce.encode(), hashlib.sha256).hexdigest()


def new_cookie_value(key: str) -> str:
    return f"{secrets.token_hex(16)}.{key}"


def _parse(value: str | None) -> tuple[str, str] | None:
    if not value or len(value) > MAX_COOKIE_CHARS or "." not in value:
        return None
    nonce, key = value.split(".", 1)
    if len(nonce) != 32 or not key:
        return None
    return nonce, key


def set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def tenant_of_key(res: Res, key: str) -> str | None:
    """The tenant behind `key` (cached like the REST API's check), or None."""
    cached = res.keys.cached(key)
    if cached is not None:
        return cached
    try:
        return await run_in_threadpool(res.keys.verify, res.reads, key)
    except ApiError:
        return None


async def ui_session(request: Request, res: Res) -> UiSession:
    """The logged-in session of this request; LoginRequired otherwise."""
    parsed = _parse(request.cookies.get(COOKIE))
    if parsed is None:
        raise LoginRequired
    nonce, key = parsed
    tenant_id = await tenant_of_key(res, key)
    if tenant_id is None:
        raise LoginRequired
    return UiSession(tenant_id=tenant_id, key=key, nonce=nonce)


def same_host(request: Request) -> bool:
    """The request comes from a page of this host (Origin, else Referer, names it)."""
    host = request.headers.get("host", "")
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null" or not host:
        return False
    return urlsplit(claimed).netloc.lower() == host.lower()


async def checked_post(
    request: Request,
    session: Annotated[UiSession, Depends(ui_session)],
    csrf: Annotated[str, Form()] = "",
) -> UiSession:
    """The session of a button's POST, after its CSRF token and its origin are checked."""
    if not same_host(request):
        raise CsrfRefused(
            "Refused: this request did not come from a dashboard page of this server "
            "(its Origin/Referer names another site or is missing)."
        )
    if not csrf or not hmac.compare_digest(csrf, session.csrf):
        raise CsrfRefused(
            "Refused: the form's security token is missing or stale. Reload the page and "
            "press the button again."
        )
    return session


Session = Annotated[UiSession, Depends(ui_session)]
PostSession = Annotated[UiSession, Depends(checked_post)]
