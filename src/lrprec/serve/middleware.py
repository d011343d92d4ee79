"""ASGI middleware bounding query strings and request bodies before any route runs, and timing every answer."""
from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrprec.serve.params import MAX_BODY_BYTES, MAX_QUERY_BYTES


class LimitsMiddleware:
    """Bounds request sizes (query string, body) and adds defensive response headers, and ``Server-Timing: app;dur=MS``
    (the time from the request reaching the app to its answer starting: the app's own share of a client's latency)."""

    SECURITY_HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'"),
    ]

    DOCS_CSP = (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                b"script-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'")

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, max_query: int = MAX_QUERY_BYTES):
        self.app, self.max_body, self.max_query = app, max_body, max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query:
            await _send_json(send, 414, f"query string longer than {self.max_query} bytes")
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send, 413, f"request body larger than {self.max_body} bytes")
            return
        started = False
        received = 0
        t0 = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return message

        # /docs (Swagger UI from local assets) needs its inline start-up script; nothing may come from elsewhere.
        extra = self.SECURITY_HEADERS if scope.get("path") != "/docs" else [*self.SECURITY_HEADERS[:3], self.DOCS_CSP]

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                timing = (b"server-timing", b"app;dur=%.2f" % (1000 * (time.perf_counter() - t0)))
                message = {**message, "headers": [*message.get("headers", []), *extra, timing]}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"request body larger than {self.max_body} bytes")


class _BodyTooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
