"""The pydantic models of a study spec: standard names, value types, the spec's sections and
`StudySpec` itself."""

import itertools
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = ["NAME", "NAME_PATTERN", "SEMANTICS_CHECKED", "Budget", "Notify", "Range",
           "Resources", "Scalar", "Search", "StudySpec"]

# ── standard names (ARCHITECTURE.md, "Objective protocol") ─────────────────────────────────

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
DECAYS = ("constant", "step", "linear", "cosine", "exponential")
INT_PARAMETERS = frozenset({"batch_size", "epochs", "seed"})  # ranges of these default to int
CATEGORICAL_PARAMETERS = frozenset({"optimizer", "decay", "batchnorm", "augment"})
# A standard metric optimised the wrong way round is always a typo, never an experiment.
METRIC_DIRECTIONS = {
    "val_accuracy": "maximize", "train_accuracy": "maximize", "samples_per_s": "maximize",
    "val_loss": "minimize", "train_loss": "minimize", "loss_oscillation": "minimize",
}
MAX_GRID_POINTS = 100_000
RULE_ID = re.compile(r"R(1[0-4]|[1-9])")
SCALAR_ALLOWED = "a boolean, number or string"

# ── value types ───────────────────────────────────────────────────────────────────────────


def _scalar(value: Any) -> Any:
    # One plain check rather than a union of strict types: a union reports one error per
    # member, and lax coercion would turn True into 1 or 32 into 32.0.
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"must be {SCALAR_ALLOWED}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return _scalar(value)


Scalar = Annotated[bool | int | float | str, PlainValidator(_scalar, json_schema_input_type=Any)]
Number = Annotated[int | float, PlainValidator(_number, json_schema_input_type=int | float)]


def _range_kind(name: str, declared: str | None) -> Literal["float", "int"]:
    """The declared type of a range, else the standard default for the parameter's name."""
    if declared in ("float", "int"):
        return declared  # type: ignore[return-value]
    return "int" if name in INT_PARAMETERS else "float"


class Range(BaseModel):
    """A searched interval: the arguments of Optuna's `suggest_float`/`suggest_int`.

    Only field types are checked here; the checks that relate fields (low < high, log needs
    low > 0, no step with log, whole-number int bounds) run in `StudySpec`, which knows the
    parameter's name and reports each at its own path. On a validated `StudySpec`, `type` is
    always resolved, so `kind` is final.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: Number = Field(description="a number below high")
    high: Number = Field(description="a number above low")
    log: bool = Field(False, strict=True, description="true or false")
    step: Number | None = Field(None, description="a number > 0 (not with log: true)")
    type: Literal["float", "int"] | None = None

    @property
    def kind(self) -> Literal["float", "int"]:
        """'int' or 'float': which Optuna distribution this range becomes."""
        return self.type or "float"


def _nuisance_tag(value: Any) -> str | None:
    if isinstance(value, dict | Range):
        return "range"
    return "list" if isinstance(value, list) else None


NuisanceValue = Annotated[
    Annotated[Range, Tag("range")] | Annotated[list[Scalar], Tag("list")],
    Discriminator(
        _nuisance_tag,
        custom_error_type="nuisance_constant",
        custom_error_message="a constant is not searched: use fixed: for a constant, "
        "or a list/range to search",
    ),
]

# ── the spec ──────────────────────────────────────────────────────────────────────────────


class Budget(BaseModel):
    """How many trials each arm gets, and how many seed re-runs of each arm's best."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(20, strict=True, ge=1, le=100_000, description="an integer, 1 to 100000")
    seeds: int = Field(0, strict=True, ge=0, le=1000, description="an integer, 0 to 1000")
    # Choosing each arm's configuration without tuning luck (RULES.md): when `seeds` > 0,
    # the top `candidates` tuning configurations are re-run on `candidate_seeds` seeds each
    # and the best mean is the one re-run on the `seeds` (candidates: 1 or candidate_seeds:
    # 0 re-runs the single best tuning trial, as before).
    candidates: int = Field(3, strict=True, ge=1, le=20, description="an integer, 1 to 20")
    candidate_seeds: int = Field(2, strict=True, ge=0, le=100,
                                 description="an integer, 0 to 100")
    max_concurrent: int = Field(2, strict=True, ge=1, le=1024, description="an integer, 1 to 1024")


class Search(BaseModel):
    """Which Optuna sampler proposes trials and which scheduler prunes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampler: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    pruner: Literal["asha", "median", "hyperband", "none"] = "asha"
    seed: int | None = Field(None, strict=True, description="an integer, or leave out")


class Resources(BaseModel):
    """What one trial reserves on a Ray node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float = Field(1.0, strict=True, gt=0, le=1024, description="a number > 0, at most 1024")
    gpu: float = Field(0.0, strict=True, ge=0, description="a fraction below 1, or a whole number")

    @field_validator("gpu")
    @classmethod
    def _whole_gpus_above_one(cls, gpu: float) -> float:
        # Ray packs fractional trials onto one device; a trial cannot own 1.5 devices.
        if gpu > 1 and not gpu.is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs")
        return gpu


class Notify(BaseModel):
    """Where to tell that the study ended (done, failed or cancelled): a JSON POST."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: str | None = Field(None, description="an http:// or https:// URL")

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        from urllib.parse import urlsplit

        if url is None:
            return url
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as err:
            raise ValueError(f"not a URL: {err}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(c.isspace() for c in url):
            raise ValueError("a URL has no spaces")
        return url


SEMANTICS_CHECKED = "semantics_checked"  # validation context key set by validate_spec
# A study's name, safe as a file name, a URL segment and an Optuna study; the one definition
# (the API's path parameter and the report's file names import it).
NAME = "[a-z0-9][a-z0-9_-]{0,63}"
NAME_PATTERN = f"^{NAME}$"  # anchored, for pydantic and FastAPI


class StudySpec(BaseModel):
    """A validated study: what to tune, how, and with what budget.

    Build it with `parse_spec`/`load_spec`/`validate_spec`, which report every problem at
    once. Constructing it directly runs the same checks (except the objective lookup) and
    raises pydantic's ValidationError.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="1-64 of a-z 0-9 _ -, not first _ or -")
    objective: str = Field(min_length=1, description="a built-in name or package.module:function")
    rules: list[str] = Field(default_factory=list, description="a list of rule IDs R1 to R14")
    metric: str = Field("val_accuracy", min_length=1, description="a metric the objective yields")
    direction: Literal["maximize", "minimize"] = "maximize"
    scientific: dict[str, list[Scalar]] = Field({}, description="a mapping: parameter to values")
    nuisance: dict[str, NuisanceValue] = Field({}, description="a mapping: parameter to domain")
    fixed: dict[str, Scalar] = Field({}, description="a mapping: parameter to value")
    budget: Budget = Field(default_factory=Budget, description="a mapping: trials, seeds, ...")
    search: Search = Field(default_factory=Search, description="a mapping: sampler, pruner, seed")
    resources: Resources = Field(default_factory=Resources, description="a mapping: cpu, gpu")
    # Left out of every dump (exclude): a webhook URL often holds a secret (Slack's do), and
    # a dump is what the study's attributes, the dashboard and the report's Reproduce section
    # show; nor does a new URL make a resumed study a different one. The service's queue
    # keeps it with `dump_for_queue`.
    notify: Notify = Field(default_factory=Notify, exclude=True,
                           description="a mapping: webhook")

    def dump_for_queue(self) -> dict[str, Any]:
        """The JSON dump with `notify` kept: what the service's queue stores for its worker."""
        dump = self.model_dump(mode="json")
        if self.notify.webhook:
            dump["notify"] = {"webhook": self.notify.webhook}
        return dump

    @field_validator("nuisance")
    @classmethod
    def _resolve_range_kinds(cls, nuisance: dict[str, Any]) -> dict[str, Any]:
        # Resolved once here so the planner reads `range.kind` and never re-derives it.
        return {
            name: v.model_copy(update={"type": _range_kind(name, v.type)})
            if isinstance(v, Range) else v
            for name, v in nuisance.items()
        }

    @model_validator(mode="after")
    def _check_semantics(self, info: ValidationInfo) -> "StudySpec":
        if not (info.context or {}).get(SEMANTICS_CHECKED):
            # Imported here: the checks read the models this module defines.
            from service.spec.problems import SpecError, semantic_problems

            if problems := semantic_problems(self.model_dump()):
                raise SpecError(problems)
        return self

    def arms(self) -> list[dict[str, Any]]:
        """Every combination of scientific values, in spec order; `[{}]` without any."""
        names = list(self.scientific)
        combos = itertools.product(*self.scientific.values())
        return [dict(zip(names, combo, strict=True)) for combo in combos]

    @staticmethod
    def arm_label(arm: dict[str, Any]) -> str:
        """'optimizer=adam', 'batch_size=32,optimizer=adam'; '' for the arm of no scientific."""
        return ",".join(f"{k}={json.dumps(v) if isinstance(v, bool) else v}"
                        for k, v in arm.items())

    def parameters(self) -> set[str]:
        """Every parameter the spec names, in any of scientific, nuisance and fixed."""
        return set(self.scientific) | set(self.nuisance) | set(self.fixed)
