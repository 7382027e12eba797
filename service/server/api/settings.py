"""The service's one settings object: `LIANDAN_*` environment variables, then `liandan serve`
options on top. It refuses unsafe combinations instead of starting with them."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["MIN_TOKEN_CHARS", "Settings", "host_of", "is_loopback"]

MIN_TOKEN_CHARS = 16
WEAK_TOKENS = frozenset({"changethis", "changeme", "secret", "token", "password"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "[::]", "")
# An allowed objective module: `pkg.module` (that module), `pkg.*` (the package and every
# module under it), or `pkg.module:function` (that one function).
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
ALLOW_ENTRY = re.compile(rf"{_IDENT}(\.{_IDENT})*(\.\*|:{_IDENT})?")
HOST_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; any other name or address is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _default_storage() -> str:
    return f"sqlite:///{Path.cwd() / 'liandan.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIANDAN_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    dashboard: bool = True  # serve optuna-dashboard next to the API
    dashboard_port: int = Field(8080, ge=0, le=65535)
    storage: str = Field(default_factory=_default_storage)  # LIANDAN_STORAGE
    token: SecretStr | None = None  # LIANDAN_TOKEN: Bearer token of the API and dashboard
    workers: int = Field(1, ge=0, le=64)  # 0: API only (workers run elsewhere)
    ray_address: str | None = None  # an existing Ray cluster; default: start a local head
    reports_dir: Path = Path("reports")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    heartbeat_s: float = Field(5.0, gt=0)
    stale_after_s: float = Field(60.0, gt=0)  # a running study this quiet is requeued
    status_cache_s: float = Field(0.5, ge=0)  # how stale a status read may be
    # LIANDAN_ALLOW_OBJECTIVES=a,b.*: the modules whose objectives this service runs, besides
    # the built-ins. An objective is code that runs with the worker's rights.
    allow_objectives: Annotated[tuple[str, ...], NoDecode] = ()
    # LIANDAN_ALLOWED_HOSTS=liandan.example.com,...: Host headers accepted besides the address
    # served (a reverse proxy's name). Any other Host is refused (DNS rebinding).
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # LIANDAN_MAX_TRIALS: the most trials one study may plan, arms x (trials + seeds).
    max_trials: int = Field(10_000, ge=1, le=10_000_000)
    # LIANDAN_WEBHOOK=https://...: POSTed a JSON message when any study ends (done, failed,
    # cancelled), besides the spec's own `notify.webhook`.
    webhook: str | None = None
    # LIANDAN_PUBLIC_URL: the API's address as a webhook's receiver reaches it (the report
    # link in the message); default http://HOST:PORT.
    public_url: str | None = None

    @field_validator("allow_objectives", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: "a, b.*"
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allow_objectives")
    @classmethod
    def _module_names(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            if not ALLOW_ENTRY.fullmatch(entry):
                # A bare `*` would let a spec run any importable code (subprocess, os, ...).
                raise ValueError(f"LIANDAN_ALLOW_OBJECTIVES / --allow-objective: {entry!r} is "
                                 "not a module name; use pkg.module, pkg.* or "
                                 "pkg.module:function")
        return entries

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            if not HOST_NAME.fullmatch(host):
                raise ValueError(f"LIANDAN_ALLOWED_HOSTS: {host!r} is not a host name or "
                                 "address (leave the port out)")
        return tuple(h.lower().strip("[]") for h in hosts)

    @field_validator("webhook", "public_url")
    @classmethod
    def _http_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        from service.spec import Notify

        try:  # the spec's rule for a webhook, so both read the same
            return Notify(webhook=url or None).webhook
        except ValidationError as err:
            raise ValueError(f"LIANDAN_{info.field_name.upper()}: "
                             f"{err.errors()[0]['ctx']['error']}") from None

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        token = self.token.get_secret_value() if self.token else None
        if token is not None and (len(token) < MIN_TOKEN_CHARS or token.lower() in WEAK_TOKENS):
            raise ValueError(f"LIANDAN_TOKEN must be at least {MIN_TOKEN_CHARS} characters and "
                             "not a placeholder; e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'`")
        if not self.loopback and token is None:
            raise ValueError(f"refusing to serve on {self.host}, which is not loopback, without "
                             "a token: set LIANDAN_TOKEN (every request must then carry it)")
        if self.stale_after_s < 3 * self.heartbeat_s:
            raise ValueError("stale_after_s must be at least 3 heartbeats, or a slow beat "
                             "would requeue a study that is still running")
        return self

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def reads_need_token(self) -> bool:
        """Off loopback every request needs the token, reads included."""
        return not self.loopback

    def api_url(self) -> str:
        """Where the API answers, for links sent away (LIANDAN_PUBLIC_URL, else the address
        served; on a wildcard, this machine's name)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.getfqdn() if self.host in WILDCARDS else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    def served_hosts(self) -> frozenset[str]:
        """The Host names a request may carry: the address served (every loopback name on
        loopback; this machine's names and addresses on a wildcard) and LIANDAN_ALLOWED_HOSTS.
        A page on another name that resolves here (DNS rebinding) is refused."""
        host = self.host.lower().strip("[]")
        names = {host, *self.allowed_hosts}
        if self.loopback:
            names.update(LOOPBACK_NAMES)
        elif host in WILDCARDS:
            names.update(LOOPBACK_NAMES)
            names.update(_machine_names())
        return frozenset(names)


def _machine_names() -> set[str]:
    """This machine's host names and interface addresses (for a wildcard bind)."""
    import psutil

    return {socket.gethostname().lower(), socket.getfqdn().lower(), *(
        a.address.split("%")[0].lower() for addrs in psutil.net_if_addrs().values()
        for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))}


def host_of(header: str | None) -> str | None:
    """The host name of a Host header, lower case, without port or IPv6 brackets."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        end = header.find("]")
        return header[1:end] if end > 0 else None
    name, _, port = header.rpartition(":") if header.count(":") == 1 else (header, "", "")
    if port and not port.isdigit():
        return None
    return name or None
