"""What routes depend on, as `Annotated` aliases: settings, the queue, the token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.server.api.settings import Settings
from service.server.queue import StudyQueue

bearer = HTTPBearer(auto_error=False, description="LIANDAN_TOKEN")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_queue(request: Request) -> StudyQueue:
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[StudyQueue, Depends(get_queue)]


def token_matches(settings: Settings, given: str | None) -> bool:
    expected = settings.token_value()
    return expected is not None and given is not None and hmac.compare_digest(
        given.encode(), expected.encode())


def require_token(settings: SettingsDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Every mutating request carries `Authorization: Bearer <LIANDAN_TOKEN>`."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing Bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    if not token_matches(settings, credentials.credentials):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong token",
                            headers={"WWW-Authenticate": "Bearer"})


TokenDep = Depends(require_token)
