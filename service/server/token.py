"""The service's token: `LIANDAN_TOKEN`, else the owner-only `.liandan-token` file that
`liandan serve` writes on loopback when it was given none, which the client commands read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client reads the token without importing pydantic
    from service.server.api.settings import Settings

__all__ = ["TOKEN_FILE", "ensure_token", "find_token"]

TOKEN_FILE = Path(".liandan-token")


def _stored_token(token_file: Path) -> str:
    """The token written in `token_file`, or "" when there is none."""
    return token_file.read_text().strip() if token_file.is_file() else ""


def find_token() -> str | None:
    """The client's token: `LIANDAN_TOKEN`, else the token file, else None."""
    return os.environ.get("LIANDAN_TOKEN") or _stored_token(TOKEN_FILE) or None


def ensure_token(settings: Settings, token_file: Path = TOKEN_FILE) -> Settings:
    """With no LIANDAN_TOKEN (allowed on loopback only), mutating requests still need one:
    reuse the token in `token_file`, or write a new random one there (owner-only)."""
    from pydantic import SecretStr

    if settings.token is not None:
        return settings
    token = _stored_token(token_file)
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return settings.model_copy(update={"token": SecretStr(token)})
