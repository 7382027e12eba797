"""The FastAPI app of `liandan serve`: routers, middleware, one error shape for every 422."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.server.api.middleware import BodyLimit, HostCheck, TokenEverywhere
from service.server.api.routes import health, studies
from service.server.api.settings import Settings
from service.server.queue import StudyQueue
from service.spec import SpecProblem


def create_app(settings: Settings | None = None, queue: StudyQueue | None = None,
               ray_address: str | None = None) -> FastAPI:
    """The API on `settings`; `ray_address`: the service's Ray (a local head `serve`
    started), whose recorded nodes submissions are checked against."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.queue = queue or StudyQueue(settings.storage).setup()
        yield
        if queue is None:
            app.state.queue.close()

    app = FastAPI(title="liandan", version="0.1.0", lifespan=lifespan,
                  summary="Hyperparameter studies on Optuna + Ray Tune: submit, watch, read.")
    app.state.settings = settings
    app.state.ray_address = ray_address or settings.ray_address
    app.state.status_cache = studies.StatusCache(settings.status_cache_s)
    app.include_router(health.router)
    app.include_router(studies.router)

    @app.exception_handler(RequestValidationError)
    async def problems(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Path and query problems in the same shape as a spec's (path, value, allowed, message).
        detail = [SpecProblem(".".join(map(str, e["loc"])), e.get("input"), ", ".join(
            f"{k} {v}" for k, v in e.get("ctx", {}).items()) or e["type"], e["msg"]).to_dict()
            for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    openapi = app.openapi
    app.openapi = lambda: app.openapi_schema or studies.add_spec_schema(openapi())  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.reads_need_token:  # off loopback: every request, the schema included
        app.add_middleware(TokenEverywhere, settings=settings)
    app.add_middleware(HostCheck, hosts=settings.served_hosts())  # added last: runs first
    return app
