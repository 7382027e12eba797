"""The service's one settings object: `LIANDAN_*` environment variables, then `liandan serve`
options on top. It refuses unsafe combinations instead of starting with them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MIN_TOKEN_CHARS", "Settings", "is_loopback"]

MIN_TOKEN_CHARS = 16
WEAK_TOKENS = frozenset({"changethis", "changeme", "secret", "token", "password"})


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

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None
