"""/studies: submit a spec, list and read studies, cancel one, read its report and findings."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from service.plan import make_plan
from service.server.allowed import objective_check
from service.server.api.deps import QueueDep, SettingsDep, TokenDep
from service.server.api.schemas import (
    BestTrial,
    ErrorPublic,
    FindingsPublic,
    Progress,
    SpecProblemsPublic,
    StudiesPublic,
    StudyCreate,
    StudyCreated,
    StudyPublic,
    StudySummary,
    TrialCounts,
)
from service.server.api.settings import Settings
from service.server.api.spec_body import JSON_TYPES, limit_problems, read_body, spec_from_body
from service.server.queue import RESUMABLE, QueueEntry, StudyExists, StudyQueue
from service.spec import NAME_PATTERN, SpecError, StudySpec
from service.store.status import TrialTally, best_trial, tally_trials

router = APIRouter(prefix="/studies", tags=["studies"])

StudyName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64,
                                description="the spec's name")]
NOT_FOUND = {404: {"model": ErrorPublic, "description": "no study of this name was submitted"}}
UNAUTHORIZED = {401: {"model": ErrorPublic, "description": "missing or wrong Bearer token"}}
INVALID = {422: {"model": SpecProblemsPublic, "description": "every problem of the request"}}
PLOT_FILE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}\.png")  # what the reports write
PlotFile = Annotated[str, Path(pattern=PLOT_FILE.pattern, max_length=132,
                               description="a plot of the report, e.g. curves.png")]


# ── links and read-out ────────────────────────────────────────────────────────────────────


def dashboard_url(request: Request, settings: Settings, study_id: int | None) -> str | None:
    if not settings.dashboard:
        return None
    wildcard = settings.host in ("0.0.0.0", "::", "[::]")
    host = (request.url.hostname or "127.0.0.1") if wildcard else settings.host
    host = f"[{host}]" if ":" in host else host
    base = f"http://{host}:{settings.dashboard_port}/dashboard"
    return base if study_id is None else f"{base}/studies/{study_id}"


def _counts(tally: TrialTally) -> TrialCounts:
    c = tally.counts
    return TrialCounts(complete=c["COMPLETE"], pruned=c["PRUNED"], fail=c["FAIL"],
                       running=c["RUNNING"], waiting=c["WAITING"], retried=tally.retried)


def _progress(entry: QueueEntry, tally: TrialTally) -> Progress:
    return Progress(finished=tally.finished, total=entry.total_trials,
                    fraction=min(tally.finished / max(entry.total_trials, 1), 1.0))


def _summary_fields(entry: QueueEntry, tally: TrialTally) -> dict[str, Any]:
    spec = entry.spec
    return {"name": entry.name, "state": entry.state, "objective": spec["objective"],
            "metric": spec["metric"], "direction": spec["direction"],
            "counts": _counts(tally), "best_value": tally.best_value,
            "progress": _progress(entry, tally), "created": entry.created,
            "updated": entry.updated}


def read_study(request: Request, settings: Settings, queue: StudyQueue,
               name: str) -> StudyPublic:
    """A study's queue row and trial read-out: four short SQL statements."""
    entry = queue.get(name)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {name!r} was submitted")
    direction = entry.spec["direction"]
    with queue.engine.connect() as conn:
        tally = tally_trials(conn, [name], {name: direction})[name]
        best = best_trial(conn, name, direction)
    return StudyPublic(
        **_summary_fields(entry, tally),
        best_trial=BestTrial(**best) if best else None,
        cancel_requested=entry.cancel_requested, error=entry.error,
        dashboard_url=dashboard_url(request, settings, tally.study_id),
        report_url=str(request.url_for("read_report", name=name)),
        # The webhook stays out of what anyone who can read sees (it may hold a secret).
        spec={k: v for k, v in entry.spec.items() if k != "notify"})


class StatusCache:
    """Answers to `GET /studies/{name}`, kept `ttl` seconds as JSON bytes: a hundred clients
    polling one study cost the database one read per `ttl`, and a hit costs no validation or
    serialisation. A change made through this API (submit, cancel) drops the entry, so the
    caller sees its own change at once."""

    def __init__(self, ttl: float):
        self.ttl, self._entries = ttl, {}

    def get(self, key: str) -> bytes | None:
        hit = self._entries.get(key)
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def put(self, key: str, value: bytes) -> bytes:
        if self.ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, value)
        return value

    def drop(self, name: str) -> None:
        for key in [k for k in self._entries if k.split("\0", 1)[0] == name]:
            self._entries.pop(key, None)


def _cache(request: Request) -> StatusCache:
    return request.app.state.status_cache


def _report_file(settings: Settings, name: str, suffix: str) -> FilePath:
    """`<reports>/<name><suffix>`, proven to stay inside the reports folder."""
    root = settings.reports_dir.resolve()
    path = (root / f"{name}{suffix}").resolve()
    if path.parent != root:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
    return path


def _checked_spec(request: Request, body: bytes, content_type: str) -> StudySpec:
    settings: Settings = request.app.state.settings
    spec = spec_from_body(body, content_type, objective_check(settings.allow_objectives))
    nodes = request.app.state.queue.cluster(request.app.state.ray_address)
    if problems := limit_problems(spec, settings.max_trials, nodes):
        raise SpecError(problems)
    return spec


# ── routes ────────────────────────────────────────────────────────────────────────────────


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=StudyCreated,
    dependencies=[TokenDep], summary="Submit a study spec (YAML or JSON)",
    responses={**UNAUTHORIZED, **INVALID,
               409: {"model": ErrorPublic, "description": "the name is taken"},
               413: {"model": ErrorPublic, "description": "body over the size limit"},
               415: {"model": ErrorPublic, "description": "not YAML or JSON"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        t: {"schema": {"$ref": "#/components/schemas/StudySpec"}}
        for t in ("application/yaml", "text/yaml", *JSON_TYPES)}}},
)
async def create_study(request: Request, settings: SettingsDep,
                       queue: QueueDep) -> StudyCreated | JSONResponse:
    """Validate the spec fully (the same checks as `liandan run`; the objective must be a
    built-in or a function of a module the operator allowed, checked without importing it
    here), check it fits this service (LIANDAN_MAX_TRIALS, the cluster's largest node) and
    queue it. Nothing is stored when any check fails."""
    body = await read_body(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        spec = await run_in_threadpool(_checked_spec, request, body, content_type)
    except SpecError as err:
        return JSONResponse({"detail": err.to_dict()}, status.HTTP_422_UNPROCESSABLE_CONTENT)
    try:
        entry = await run_in_threadpool(queue.submit, spec.name, spec.dump_for_queue(),
                                        make_plan(spec).total_trials)
    except StudyExists:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"a study named {spec.name!r} already exists; choose another "
                            "name") from None
    _cache(request).drop(spec.name)
    return StudyCreated(name=entry.name, state=entry.state,
                        dashboard_url=dashboard_url(request, settings, None),
                        report_url=str(request.url_for("read_report", name=entry.name)))


@router.get("", response_model=StudiesPublic, summary="Every submitted study",
            responses={**INVALID})
def list_studies(queue: QueueDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0, le=2**31)] = 0) -> StudiesPublic:
    entries = queue.entries(limit=limit, offset=offset)
    directions = {e.name: e.spec["direction"] for e in entries}
    with queue.engine.connect() as conn:
        tallies = tally_trials(conn, list(directions), directions)
    data = [StudySummary(**_summary_fields(e, tallies[e.name])) for e in entries]
    return StudiesPublic(data=data, count=len(data))


@router.get("/{name}", response_model=StudyPublic, summary="One study's state and progress",
            responses={**NOT_FOUND, **INVALID})
async def get_study(request: Request, settings: SettingsDep, queue: QueueDep,
                    name: StudyName) -> Response:
    # The hot path of every poller. A hit is answered on the event loop as stored bytes;
    # a miss reads the database in the thread pool and is validated as StudyPublic there.
    key = f"{name}\0{request.url.hostname}"  # the dashboard link depends on the Host
    cache = _cache(request)
    body = cache.get(key)
    if body is None:
        study = await run_in_threadpool(read_study, request, settings, queue, name)
        body = cache.put(key, study.model_dump_json().encode())
    return Response(body, media_type="application/json")


@router.post("/{name}/cancel", response_model=StudyPublic, dependencies=[TokenDep],
             summary="Cancel a queued or running study",
             responses={**UNAUTHORIZED, **NOT_FOUND, **INVALID,
                        409: {"model": ErrorPublic, "description": "it already finished"}})
def cancel_study(request: Request, settings: SettingsDep, queue: QueueDep,
                 name: StudyName) -> StudyPublic:
    """A queued study is cancelled at once. A running one stops within seconds: its running
    trials are recorded FAIL (`fail_reason=cancelled`), then its state is `cancelled`."""
    entry = queue.request_cancel(name)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {name!r} was submitted")
    if entry.state in ("done", "failed"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"study {name!r} already {entry.state}")
    _cache(request).drop(name)
    return read_study(request, settings, queue, name)


@router.post("/{name}/resume", response_model=StudyPublic, dependencies=[TokenDep],
             summary="Run a cancelled or failed study again from where it stopped",
             responses={**UNAUTHORIZED, **NOT_FOUND, **INVALID,
                        409: {"model": ErrorPublic, "description": "it is not cancelled or "
                                                                   "failed"}})
def resume_study(request: Request, settings: SettingsDep, queue: QueueDep,
                 name: StudyName) -> StudyPublic:
    """Queue a cancelled or failed study again. Its finished trials are kept; the trials a
    cancel or a crash cut short, and the rest of the budget, run when a worker takes it."""
    entry, resumed = queue.resume(name)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {name!r} was submitted")
    _cache(request).drop(name)
    if not resumed:
        raise HTTPException(status.HTTP_409_CONFLICT, f"study {name!r} is {entry.state}: only "
                            f"a {' or '.join(RESUMABLE)} study can be resumed")
    return read_study(request, settings, queue, name)


def _not_ready(name: str, entry: QueueEntry | None, what: str) -> str:
    """Why a study has no report (a 404's detail), by its state."""
    if entry is None:
        return f"no study {name!r} was submitted to this service"
    return {
        "queued": f"no {what} for {name!r} yet: it is queued; the {what} is written when it "
                  "finishes",
        "running": f"no {what} for {name!r} yet: it is running; the {what} is written when "
                   "it finishes",
        "cancelled": f"no {what} for {name!r}: it was cancelled before it finished (POST "
                     f"/studies/{name}/resume runs the rest of it)",
        "failed": f"no {what} for {name!r}: it failed (see its error; POST "
                  f"/studies/{name}/resume runs it again)",
        "done": f"no {what} for {name!r}: it finished but the {what} was not written"
                + (f" ({entry.error})" if entry.error else ""),
    }[entry.state]


def _written(settings, queue, name: str, suffix: str, what: str):
    """The study's report file with `suffix`, or 404 saying why there is none. Only a study
    this service ran to its end has one: a file of the same name in the reports folder
    (the repository's committed examples, an earlier run) is not its report."""
    path = _report_file(settings, name, suffix)
    entry = queue.get(name)
    if entry is None or entry.state != "done" or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, _not_ready(name, entry, what))
    return path


def _linked(request: Request, name: str, markdown: str) -> str:
    """The report's image links (`NAME/plot.png`, relative to the reports folder) made
    absolute links to this API's plot route."""
    base = str(request.url_for("read_plot", name=name, file="x.png"))[:-len("x.png")]
    pattern = re.compile(r"(!\[[^\]\n]*\]\()" + re.escape(name) + r"/(" + PLOT_FILE.pattern
                         + r")\)")
    return pattern.sub(lambda m: f"{m.group(1)}{base}{m.group(2)})", markdown)


@router.get("/{name}/report", name="read_report", response_class=Response,
            summary="The study's markdown report (written when it finishes)",
            responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}},
                       **NOT_FOUND, **INVALID})
def read_report(request: Request, settings: SettingsDep, queue: QueueDep,
                name: StudyName) -> Response:
    """The markdown report; its plots link to `/studies/{name}/report/{file}`."""
    path = _written(settings, queue, name, ".md", "report")
    return Response(_linked(request, name, path.read_text(encoding="utf-8")),
                    media_type="text/markdown; charset=utf-8")


@router.get("/{name}/report/{file}", name="read_plot", response_class=FileResponse,
            summary="A plot of the study's report (PNG)",
            responses={200: {"content": {"image/png": {}}}, **NOT_FOUND, **INVALID})
def read_plot(settings: SettingsDep, queue: QueueDep, name: StudyName,
              file: PlotFile) -> FileResponse:
    _written(settings, queue, name, ".md", "report")
    folder = _report_file(settings, name, "")  # <reports>/<name>, checked inside reports
    path = (folder / file).resolve()
    if path.parent != folder or not path.is_file():  # no `..`, no symlink out of the folder
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"report {name!r} has no plot {file!r}")
    return FileResponse(path, media_type="image/png")


@router.get("/{name}/findings", response_model=FindingsPublic,
            summary="The study's findings (the ◆ findings JSON)",
            responses={**NOT_FOUND, **INVALID})
def read_findings(settings: SettingsDep, queue: QueueDep, name: StudyName) -> FindingsPublic:
    path = _written(settings, queue, name, ".json", "findings")
    return FindingsPublic.model_validate(json.loads(path.read_text(encoding="utf-8")))


def add_spec_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put the spec model in /openapi.json's components: POST /studies reads its body by hand
    (YAML or JSON), so FastAPI does not collect the model from a parameter."""
    schema = StudyCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components[StudyCreate.__name__] = schema
    return openapi
