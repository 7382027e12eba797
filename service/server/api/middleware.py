"""ASGI middleware that acts before any route: the Host check, the body size limit and, off
loopback, the token on every request (the OpenAPI document and /docs included)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.server.api.settings import Settings, host_of


async def _send_json(send: Send, code: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": code, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """413 at once for a declared body (Content-Length) over `limit` bytes, before any route
    reads it. A chunked body has no length up front; the one route that reads a body
    (POST /studies) counts it as it streams (`read_body`)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                return await _send_json(send, 413,
                                        {"detail": f"request body over {self.limit} bytes"})
        await self.app(scope, receive, send)


class TokenEverywhere:
    """Off loopback: 401 for any request without the Bearer token (reads, docs, schema)."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from service.server.api.deps import token_matches

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        given = auth[7:] if auth.startswith("Bearer ") else None
        if not token_matches(self.settings, given):
            return await _send_json(send, 401, {"detail": "missing or wrong Bearer token"},
                                    [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


class HostCheck:
    """400 for a request whose Host is not a name this service is served at
    (`Settings.served_hosts`). A web page the browser loaded from `attacker.example`, whose
    DNS then points at 127.0.0.1 (DNS rebinding), reaches the API with `Host:
    attacker.example`: same-origin to the browser, refused here."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_of(header) not in self.hosts:
                return await _send_json(send, 400, {
                    "detail": f"Host {header[:100]!r} is not served here; a proxy's name "
                              "goes in LIANDAN_ALLOWED_HOSTS"})
        await self.app(scope, receive, send)
