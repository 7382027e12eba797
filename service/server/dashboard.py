"""optuna-dashboard on the service's storage, behind the service's token.

    browser ──► TokenGate (WSGI) ──► optuna_dashboard.wsgi(storage, ReportArtifacts)

The dashboard's own API can create, rename and delete studies, overwrite notes and tell
trials, so every request that is not a read (GET/HEAD) needs LIANDAN_TOKEN, on loopback
too: `Authorization: Bearer <token>`, or a link with `?token=<token>` that sets an HttpOnly,
SameSite=Strict cookie and redirects to the same page without the token in its address.
On loopback the pages and reads stay open (a browser on the machine just opens
http://127.0.0.1:8080/); off loopback every request needs the token. Any request whose Host
is not a name the dashboard is served at is refused, so a page on another name that
resolves to 127.0.0.1 (DNS rebinding) reaches nothing. Plots of the reports are served from
the reports folder, so the report note's images show in the dashboard of `liandan serve`
(see service/report/notes.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import threading
from collections.abc import Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from service.server.api.settings import host_of

__all__ = ["COOKIE", "ReportArtifacts", "TokenGate", "make_dashboard", "serve_dashboard"]

COOKIE = "liandan_dashboard"
ARTIFACT_ID = re.compile(r"[0-9a-fA-F-]{1,64}")
UPLOADS = ".dashboard-artifacts"  # not a study name (those start with [a-z0-9])
READS = ("GET", "HEAD")


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest, so a leaked cookie is not the API token."""
    return hashlib.sha256(b"liandan-dashboard\0" + token.encode()).hexdigest()


def _plain(start_response: Callable, status: str, text: str,
           headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]


class TokenGate:
    """WSGI middleware: refuse a foreign Host; pass a request on when it carries the token,
    or, with `reads_open` (loopback), when it only reads."""

    def __init__(self, app: Callable, token: str, reads_open: bool = False,
                 hosts: frozenset[str] | None = None):
        self.app, self.token, self.cookie = app, token, cookie_value(token)
        self.reads_open, self.hosts = reads_open, hosts

    def _has_token(self, environ: dict[str, Any]) -> bool:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(),
                                                              self.token.encode()):
            return True
        try:
            cookies = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        except CookieError:
            return False
        return COOKIE in cookies and hmac.compare_digest(cookies[COOKIE].value, self.cookie)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if self.hosts is not None and host_of(environ.get("HTTP_HOST")) not in self.hosts:
            return _plain(start_response, "400 Bad Request",
                          "400 Bad Request: this Host is not served here (a proxy's name goes "
                          "in LIANDAN_ALLOWED_HOSTS).\n")
        if self._has_token(environ):
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
        if self.reads_open and environ.get("REQUEST_METHOD", "GET") in READS:
            return self.app(environ, start_response)
        what = "changes to studies need" if self.reads_open else "this dashboard needs"
        return _plain(start_response, "401 Unauthorized",
                      f"401 Unauthorized: {what} the service token. Open the dashboard as "
                      "/?token=<LIANDAN_TOKEN> once, or send Authorization: Bearer <token>.\n",
                      [("WWW-Authenticate", "Bearer")])


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


def make_dashboard(storage_url: str, reports_dir: str | Path, token: str,
                   reads_open: bool = False, hosts: frozenset[str] | None = None) -> Callable:
    """The dashboard's WSGI app on `storage_url`, behind `token` (see TokenGate)."""
    import optuna_dashboard

    from service.store.storage import open_storage

    app = optuna_dashboard.wsgi(open_storage(storage_url),
                                artifact_store=ReportArtifacts(reports_dir))
    return TokenGate(app, token, reads_open, hosts)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open; don't wait for them at exit
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per static file drowns the service's own log


def serve_dashboard(host: str, port: int, storage_url: str, reports_dir: str | Path,
                    token: str, ready: threading.Event | None = None, *,
                    reads_open: bool = False, hosts: frozenset[str] | None = None) -> None:
    """Serve the dashboard until interrupted (threaded: a page loads many files at once)."""
    app = make_dashboard(storage_url, reports_dir, token, reads_open, hosts)
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    with make_server(host.strip("[]"), port, app, server_class=server_class,
                     handler_class=_QuietHandler) as server:
        if ready is not None:
            ready.set()
        server.serve_forever()
