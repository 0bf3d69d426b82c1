"""Request-size limit as ASGI middleware: refuse (413) before a body is read whole.

A declared Content-Length over the cap is refused at once; a chunked body is counted as
it streams and cut off at the cap. Uploads get their own (larger) cap.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.error_codes import ErrorCode
from jobs.schemas import ErrorBody, ErrorEnvelope


class BodyTooLarge(Exception):
    pass


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
            await _refuse(send, cap)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _refuse(send, cap)


async def _refuse(send: Send, cap: int) -> None:
    message = f"The request body is over the {cap}-byte limit; send less at once."
    envelope = ErrorEnvelope(error=ErrorBody(code=ErrorCode.PAYLOAD_TOO_LARGE, message=message))
    payload = envelope.model_dump_json().encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"connection", b"close"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
