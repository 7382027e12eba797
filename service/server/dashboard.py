"""optuna-dashboard on the service's storage, behind the service's token where it must be.

    browser ──► TokenGate (WSGI) ──► optuna_dashboard.wsgi(storage, ReportArtifacts)

The dashboard's own API can rename and delete studies, so off loopback it is served only
to holders of LIANDAN_TOKEN: `Authorization: Bearer <token>`, or a link with `?token=<token>`
that sets an HttpOnly, SameSite=Strict cookie and redirects to the same page without the
token in its address. Plots of the reports are served from the reports folder, so the report
note's images show in the dashboard of `liandan serve` (see service/report/notes.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import threading
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["COOKIE", "ReportArtifacts", "TokenGate", "make_dashboard", "serve_dashboard"]

COOKIE = "liandan_dashboard"
ARTIFACT_ID = re.compile(r"[0-9a-fA-F-]{1,64}")
UPLOADS = ".dashboard-artifacts"  # not a study name (those start with [a-z0-9])


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest, so a leaked cookie is not the API token."""
    return hashlib.sha256(b"liandan-dashboard\0" + token.encode()).hexdigest()


class TokenGate:
    """WSGI middleware: pass a request on only when it carries the token."""

    def __init__(self, app: Callable, token: str):
        self.app, self.token, self.cookie = app, token, cookie_value(token)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(),
                                                              self.token.encode()):
            return self.app(environ, start_response)
        cookies = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        if COOKIE in cookies and hmac.compare_digest(cookies[COOKIE].value, self.cookie):
            return self.app(environ, start_response)
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and hmac.compare_digest(given[0].encode(), self.token.encode()):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = environ.get("PATH_INFO", "/") + (f"?{rest}" if rest else "")
            start_response("303 See Other", [
                ("Location", location),
                ("Set-Cookie", f"{COOKIE}={self.cookie}; Path=/; HttpOnly; SameSite=Strict"),
                ("Cache-Control", "no-store"), ("Content-Length", "0")])
            return [b""]
        body = (b"401 Unauthorized: this dashboard needs the service token. Open it as "
                b"/?token=<LIANDAN_TOKEN> once, or send Authorization: Bearer <token>.\n")
        start_response("401 Unauthorized", [
            ("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", "Bearer"),
            ("Content-Length", str(len(body)))])
        return [body]


class ReportArtifacts:
    """An Optuna artifact store over the reports folder: `<reports>/<study>/artifacts/<id>`
    (where `liandan report` and the worker upload plots); uploads made in the dashboard go to
    `<reports>/.dashboard-artifacts/`."""

    def __init__(self, reports_dir: str | Path):
        self.root = Path(reports_dir).resolve()

    def _find(self, artifact_id: str) -> Path:
        if not ARTIFACT_ID.fullmatch(artifact_id):
            raise FileNotFoundError(artifact_id)
        for folder in [self.root / UPLOADS, *sorted(self.root.glob("*/artifacts"))]:
            path = folder / artifact_id
            if path.is_file() and path.resolve().is_relative_to(self.root):  # no symlinks out
                return path
        raise FileNotFoundError(artifact_id)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._find(artifact_id).open("rb")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if not ARTIFACT_ID.fullmatch(artifact_id):
            raise ValueError(f"bad artifact id {artifact_id!r}")
        folder = self.root / UPLOADS
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / artifact_id).open("wb") as f:
            while chunk := content_body.read(1 << 16):
                f.write(chunk)

    def remove(self, artifact_id: str) -> None:
        try:
            self._find(artifact_id).unlink()
        except FileNotFoundError:
            pass


def make_dashboard(storage_url: str, reports_dir: str | Path, token: str | None) -> Callable:
    """The dashboard's WSGI app on `storage_url`, gated by `token` when one is given."""
    import optuna_dashboard

    from service.store.storage import open_storage

    app = optuna_dashboard.wsgi(open_storage(storage_url),
                                artifact_store=ReportArtifacts(reports_dir))
    return TokenGate(app, token) if token else app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open; don't wait for them at exit
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per static file drowns the service's own log


def serve_dashboard(host: str, port: int, storage_url: str, reports_dir: str | Path,
                    token: str | None, ready: threading.Event | None = None) -> None:
    """Serve the dashboard until interrupted (threaded: a page loads many files at once)."""
    app = make_dashboard(storage_url, reports_dir, token)
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    with make_server(host.strip("[]"), port, app, server_class=server_class,
                     handler_class=_QuietHandler) as server:
        if ready is not None:
            ready.set()
        server.serve_forever()
