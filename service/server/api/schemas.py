"""The API's contract: request and response bodies (OpenAPI at /openapi.json).

`StudyCreate` is the ◆ study spec itself (service/spec/), sent as YAML or JSON. Responses
are the `Study*Public` family; a rejected spec is `SpecProblemsPublic`, the same problems
`liandan run` prints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.spec import StudySpec

StudyCreate = StudySpec  # the body of POST /studies
StudyState = Literal["queued", "running", "done", "failed", "cancelled"]
Verdict = Literal["supported", "contradicted", "inconclusive", "not_tested"]


class SpecProblemPublic(BaseModel):
    path: str = Field(description="dotted field path, or <yaml>, <body>, <root>")
    value: Any = Field(None, description="what was given")
    allowed: str = Field(description="what is allowed there")
    message: str


class SpecProblemsPublic(BaseModel):
    """A 422: every problem of the request, one per path."""

    detail: list[SpecProblemPublic]


class ErrorPublic(BaseModel):
    """Any other 4xx: one sentence saying what is wrong."""

    detail: str


class TrialCounts(BaseModel):
    """Trials by Optuna state, over all arms (seed re-runs included)."""

    complete: int = 0
    pruned: int = 0
    fail: int = 0
    running: int = Field(0, description="RUNNING in Optuna: training, or waiting in Ray for "
                                        "a free CPU/GPU")
    waiting: int = 0
    retried: int = Field(0, description="FAIL trials a crash or cancel cut short; their "
                                        "budget is run again on resume (counted in fail)")


class Progress(BaseModel):
    finished: int = Field(description="trials that spent budget: complete, pruned, failed")
    total: int = Field(description="the plan's trials: tuning + seed re-runs, all arms")
    fraction: float = Field(ge=0, le=1)


class BestTrial(BaseModel):
    study: str = Field(description="the Optuna study (one per arm): NAME or NAME[arm]")
    arm: str | None
    number: int
    value: float
    params: dict[str, Any]


class StudyCreated(BaseModel):
    """The answer to a submission: where to watch it and where its report will be."""

    name: str
    state: StudyState
    dashboard_url: str | None = Field(description="its page in optuna-dashboard (the "
                                                  "dashboard's home until the first trial)")
    report_url: str


class StudySummary(BaseModel):
    name: str
    state: StudyState
    objective: str
    metric: str
    direction: Literal["maximize", "minimize"]
    counts: TrialCounts
    best_value: float | None
    progress: Progress
    created: datetime
    updated: datetime


class StudiesPublic(BaseModel):
    data: list[StudySummary]
    count: int


class StudyPublic(StudySummary):
    """One study: its queue state, trial counts, best tuning trial and progress."""

    best_trial: BestTrial | None
    cancel_requested: bool
    error: str | None = Field(description="why it failed, or a problem after it finished")
    dashboard_url: str | None
    report_url: str
    spec: dict[str, Any]


class FindingPublic(BaseModel):
    """One finding of the ◆ findings JSON."""

    model_config = ConfigDict(extra="allow")

    rule: str
    claim: str
    verdict: Verdict
    metric: str = ""
    effect: float | None = None
    ci: list[float | None] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n: list[int] | None = None
    method: str = ""
    evidence: str = ""


class FindingsPublic(BaseModel):
    """The ◆ findings JSON written next to the markdown report."""

    model_config = ConfigDict(extra="allow")

    study: str
    objective: str
    device: str
    created: str
    findings: list[FindingPublic]


class HealthPublic(BaseModel):
    status: Literal["ok"]
    queue: dict[str, int] = Field(description="studies by state")
