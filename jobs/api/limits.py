"""Request limits as ASGI middleware: refuse before a body is read whole or a bad id is used.

`BodySizeLimit`: a declared Content-Length over the cap is refused (413) at once; a chunked
body is counted as it streams and cut off at the cap. Uploads get their own (larger) cap.
`PlainRequestTarget`: a path or query string with a NUL byte is refused (400).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.error_codes import ErrorCode
from jobs.schemas import ErrorBody, ErrorEnvelope


class BodyTooLarge(HTTPException):
    """Raised from `receive` past the cap. An HTTPException because FastAPI re-raises those
    while reading a body (any other exception there becomes its own 400, which made a chunked
    body over the cap a `malformed_json`); the app's handler answers 413 `payload_too_large`."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, too_large_message(cap), headers={"Connection": "close"})


def too_large_message(cap: int) -> str:
    return f"The request body is over the {cap}-byte limit; send less at once."


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.max_upload_bytes if scope["path"].startswith("/v1/uploads") else self.max_bytes
        # Multipart framing adds a little on top of the file itself.
        cap += 64 * 1024 if scope["path"].startswith("/v1/uploads") else 0
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await send_error(send, 413, ErrorCode.PAYLOAD_TOO_LARGE, too_large_message(cap))
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:  # read outside FastAPI's body handling
            if not started:
                await send_error(send, 413, ErrorCode.PAYLOAD_TOO_LARGE, too_large_message(cap))


class PlainRequestTarget:
    """No id or parameter of this API holds a NUL byte, and PostgreSQL refuses to compare
    one (`/v1/jobs/job_%00` was a 500): such a path or query string is a 400 for every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope["query_string"]
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                await send_error(
                    send,
                    400,
                    ErrorCode.INVALID_CHARACTERS,
                    "The path or query string contains a NUL byte (%00); no id or parameter "
                    "of this API has one.",
                    close=False,
                )
                return
        await self.app(scope, receive, send)


async def send_error(
    send: Send, status: int, code: ErrorCode, message: str, *, close: bool = True
) -> None:
    """Answer with the error envelope; `close` the connection when the body may be unread."""
    envelope = ErrorEnvelope(error=ErrorBody(code=code, message=message))
    payload = envelope.model_dump_json().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
