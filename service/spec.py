"""Study spec: the pydantic models of a study YAML, and validation that names every problem.

A spec is rejected whole (ARCHITECTURE.md, "Study spec"): `validate_spec` gathers pydantic's
type errors and the semantic checks below in one pass, so a user fixes everything in one round
trip. Each problem names its dotted path (`nuisance.lr.low`, `scientific.optimizer[1]`), the
value given and what is allowed. Validation reads only the spec (and imports the objective it
names); it never writes.
"""

import difflib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from service.records import finite

__all__ = [
    "Budget", "Notify", "Range", "Resources", "Scalar", "Search", "SpecError", "SpecProblem",
    "StudySpec", "load_spec", "parse_spec", "read_yaml", "validate_spec",
]

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


_SEMANTICS_CHECKED = "semantics_checked"  # validation context key set by validate_spec
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
        if not (info.context or {}).get(_SEMANTICS_CHECKED):
            if problems := _semantic_problems(self.model_dump()):
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


# ── problems ──────────────────────────────────────────────────────────────────────────────


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)  # YAML dates, NaN and the like: their text is what the user wrote


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec: where, what was given, what is allowed, and why."""

    path: str  # dotted: "nuisance.lr.low", "scientific.optimizer[1]"; "<yaml>", "<file>"
    value: Any
    allowed: str
    message: str

    def __str__(self) -> str:
        shown = json.dumps(_jsonable(self.value), ensure_ascii=False)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"{self.path}: {self.message} (got {shown}; allowed: {self.allowed})"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "value": _jsonable(self.value), "allowed": self.allowed,
                "message": self.message}


class SpecError(ValueError):
    """A rejected spec; `problems` holds every problem found, one line each in str()."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)  # the problems as args, so the error pickles (Ray)

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems))

    def to_dict(self) -> list[dict[str, Any]]:
        """The problems as JSON-able dicts (an HTTP 422 body)."""
        return [p.to_dict() for p in self.problems]


def _path(loc: list[Any]) -> str:
    # A pydantic loc does not tell a list index from an int dict key; the spec's shape does.
    in_list = {"rules": 1, "scientific": 2, "nuisance": 2}.get(loc[0]) if loc else None
    return "".join(f"[{part}]" if i == in_list and isinstance(part, int) else f".{part}"
                   for i, part in enumerate(loc)).lstrip(".")


def _model_at(loc: list[Any]) -> type[BaseModel]:
    """The model an extra key sits in: the spec, a section, or a nuisance range."""
    if not loc:
        return StudySpec
    if loc[0] == "nuisance":
        return Range
    return StudySpec.model_fields[loc[0]].annotation  # type: ignore[return-value]


# What each entry of a parameter section (and each value of its lists) may be.
_ENTRY_ALLOWED = {
    "rules": ("R1 to R14", "R1 to R14"),
    "scientific": ("a list of at least 2 values, one per arm", SCALAR_ALLOWED),
    "nuisance": ("a list of choices, or a range {low, high, log, step, type}", SCALAR_ALLOWED),
    "fixed": (SCALAR_ALLOWED, SCALAR_ALLOWED),
}


def _allowed_at(loc: list[Any], error_type: str, ctx: dict[str, Any]) -> str:
    if error_type == "literal_error":
        return f"one of {ctx['expected']}"
    head, rest = loc[0], loc[1:]
    if head == "nuisance" and len(rest) == 2 and isinstance(rest[1], str):
        field = Range.model_fields.get(rest[1])
    elif head in _ENTRY_ALLOWED and rest:
        return _ENTRY_ALLOWED[head][min(len(rest), 2) - 1]
    elif rest:
        field = _model_at([head]).model_fields.get(rest[0])
    else:
        field = StudySpec.model_fields.get(head)
    return (field and field.description) or "see ARCHITECTURE.md, Study spec"


def _problem_from_pydantic(error: ErrorDetails) -> SpecProblem:
    loc = list(error["loc"])
    if len(loc) > 2 and loc[0] == "nuisance" and loc[2] in ("range", "list"):
        del loc[2]  # the tag of the range-or-list union is not part of the user's spec
    error_type, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    if loc[-1] == "[key]":
        return SpecProblem(_path(loc[:-1]), value, "a string", "parameter names must be strings")
    if error_type == "missing":
        return SpecProblem(_path(loc), None, _allowed_at(loc, error_type, ctx), "is required")
    if error_type == "extra_forbidden":
        known = list(_model_at(loc[:-1]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return SpecProblem(_path(loc), value, "keys " + ", ".join(known), "unknown key" + hint)
    # Our own validators raise readable ValueErrors; pydantic prefixes them with "Value error, ".
    message = str(ctx["error"]) if error_type == "value_error" else error["msg"]
    return SpecProblem(_path(loc), value, _allowed_at(loc, error_type, ctx), message)


# ── semantic checks: on the raw dict, so they run even where pydantic rejected a field ────


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return finite(value)  # the one rule (service.records): a real, finite int/float, no bool


# The values a standard parameter takes; any other name belongs to a user objective and may
# take any value.
STANDARD_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optimizer": (lambda v: v in OPTIMIZERS, "one of " + ", ".join(OPTIMIZERS)),
    "decay": (lambda v: v in DECAYS, "one of " + ", ".join(DECAYS)),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "seed": (_is_int, "an integer"),
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "warmup_epochs": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "batchnorm": (lambda v: isinstance(v, bool), "true or false"),
    "augment": (lambda v: isinstance(v, bool), "true or false"),
}


def _value_problems(path: str, name: str, value: Any, epochs: int | None) -> Iterator[SpecProblem]:
    if name not in STANDARD_VALUES or not isinstance(value, bool | int | float | str):
        return  # a user parameter, or a value pydantic rejects already
    accepts, allowed = STANDARD_VALUES[name]
    if not accepts(value):
        yield SpecProblem(path, value, allowed, f"not a valid {name}")
    elif name == "warmup_epochs" and epochs is not None and value >= epochs:
        # A warmup that outlasts training never reaches the peak learning rate.
        yield SpecProblem(path, value, f"a number >= 0 and below epochs ({epochs})",
                          "warmup must end before training does")


def _list_problems(path: str, name: str, values: Any, epochs: int | None, *,
                   arms: bool) -> Iterator[SpecProblem]:
    if not isinstance(values, list):
        return
    if arms and len(values) < 2:
        yield SpecProblem(path, values, "a list of at least 2 values",
                          "a scientific parameter needs 2 or more arms; put a constant in fixed:")
    elif not values:
        yield SpecProblem(path, values, "a list of at least 1 value", "empty list: nothing to try")
    seen: dict[tuple[bool, Any], int] = {}
    for i, value in enumerate(values):
        if not isinstance(value, bool | int | float | str):
            continue
        key = (isinstance(value, bool), value)  # True and 1 are different choices
        if key in seen:
            yield SpecProblem(f"{path}[{i}]", value, "each value once",
                              f"duplicate of {path}[{seen[key]}]")
            continue
        seen[key] = i
        yield from _value_problems(f"{path}[{i}]", name, value, epochs)


def _range_problems(path: str, name: str, domain: dict[str, Any],
                    epochs: int | None) -> Iterator[SpecProblem]:
    low, high, step = domain.get("low"), domain.get("high"), domain.get("step")
    log, declared = domain.get("log") is True, domain.get("type")
    if name in CATEGORICAL_PARAMETERS:
        yield SpecProblem(path, domain, "a list of choices", f"{name} is categorical: give a list")
        return
    if name in INT_PARAMETERS and declared == "float":
        yield SpecProblem(f"{path}.type", declared, "int, or leave type out",
                          f"{name} takes whole numbers")
    kind = _range_kind(name, declared)
    if _is_number(low) and _is_number(high):
        if low >= high:
            yield SpecProblem(f"{path}.low", low, f"a number below high ({high})",
                              "a range needs low < high; put a constant in fixed:")
        elif log and low <= 0:
            yield SpecProblem(f"{path}.low", low, "a number > 0", "a log range needs low > 0")
    for key, bound in (("low", low), ("high", high)):
        if _is_number(bound) and kind == "int" and not _is_int(bound):
            yield SpecProblem(f"{path}.{key}", bound, "an integer", "an int range needs integers")
        else:
            yield from _value_problems(f"{path}.{key}", name, bound, epochs)
    if not _is_number(step):
        return
    if step <= 0:
        yield SpecProblem(f"{path}.step", step, "a number > 0", "step must be positive")
    elif log:
        yield SpecProblem(f"{path}.step", step, "no step with log: true",
                          "Optuna does not allow a step on a log range")
    elif kind == "int" and not _is_int(step):
        yield SpecProblem(f"{path}.step", step, "an integer", "an int range needs a whole step")
    elif _is_number(low) and _is_number(high) and low < high:
        n = (high - low) / step
        if abs(n - round(n)) > 1e-9 * max(1.0, n):  # Optuna would quietly lower `high`
            yield SpecProblem(f"{path}.step", step, f"a divisor of high - low ({high - low})",
                              "the range is not a whole number of steps")


def _grid_problems(data: dict[str, Any], nuisance: dict[Any, Any]) -> Iterator[SpecProblem]:
    search = data.get("search")
    if not isinstance(search, dict) or search.get("sampler") != "grid":
        return
    points = 1
    for name, value in nuisance.items():
        if isinstance(value, list):
            points *= max(len(value), 1)
        elif isinstance(value, dict):
            low, high, step = value.get("low"), value.get("high"), value.get("step")
            if step is None:
                yield SpecProblem(f"nuisance.{name}.step", None, "a step > 0",
                                  "the grid sampler needs a step on every range")
            elif all(map(_is_number, (low, high, step))) and step > 0 and low <= high:
                points *= math.floor((high - low) / step + 1e-9) + 1
    if points > MAX_GRID_POINTS:
        yield SpecProblem("search.sampler", "grid",
                          f"at most {MAX_GRID_POINTS} grid points per arm, or another sampler",
                          f"the grid has {points} points per arm")


def _semantic_problems(data: dict[str, Any]) -> list[SpecProblem]:
    """Checks pydantic's field types cannot express; values of the wrong type are skipped."""
    sections = {key: data.get(key) for key in ("scientific", "nuisance", "fixed")}
    sections = {k: v if isinstance(v, dict) else {} for k, v in sections.items()}
    fixed_epochs = sections["fixed"].get("epochs")
    epochs = fixed_epochs if _is_int(fixed_epochs) and fixed_epochs >= 1 else None
    problems: list[SpecProblem] = []

    rules = data.get("rules")
    first_at: dict[str, int] = {}
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, str):
            continue
        if not RULE_ID.fullmatch(rule):
            problems.append(SpecProblem(f"rules[{i}]", rule, "R1 to R14", "not a rule ID"))
        elif rule in first_at:
            problems.append(SpecProblem(f"rules[{i}]", rule, "each rule once",
                                        f"duplicate of rules[{first_at[rule]}]"))
        else:
            first_at[rule] = i

    section_of: dict[Any, str] = {}
    for section, params in sections.items():
        for name, value in params.items():
            if name in section_of:
                problems.append(SpecProblem(
                    f"{section}.{name}", value, "one of scientific, nuisance, fixed per parameter",
                    f"{name} is also in {section_of[name]}"))
            section_of.setdefault(name, section)

    for name, values in sections["scientific"].items():
        problems += _list_problems(f"scientific.{name}", name, values, epochs, arms=True)
    for name, value in sections["nuisance"].items():
        if isinstance(value, dict):
            problems += _range_problems(f"nuisance.{name}", name, value, epochs)
        else:
            problems += _list_problems(f"nuisance.{name}", name, value, epochs, arms=False)
    for name, value in sections["fixed"].items():
        problems += _value_problems(f"fixed.{name}", name, value, epochs)

    # Seed re-runs set `seed` themselves: a spec that also sets or searches it would run
    # every re-run on one seed and call their spread the seeds' spread.
    budget = data.get("budget")
    seeds = budget.get("seeds") if isinstance(budget, dict) else None
    if _is_int(seeds) and seeds > 0:
        for section in ("scientific", "nuisance", "fixed"):
            if "seed" in sections[section]:
                problems.append(SpecProblem(
                    f"{section}.seed", sections[section]["seed"],
                    "no seed parameter when budget.seeds > 0",
                    "the seed re-runs choose the seed; remove it or set budget.seeds: 0"))

    metric, direction = data.get("metric", "val_accuracy"), data.get("direction", "maximize")
    wanted = METRIC_DIRECTIONS.get(metric) if isinstance(metric, str) else None
    if wanted and direction in ("maximize", "minimize") and direction != wanted:
        problems.append(SpecProblem("direction", direction, wanted, f"{metric} is {wanted}d"))

    problems += _grid_problems(data, sections["nuisance"])
    return problems


# ── entry points ──────────────────────────────────────────────────────────────────────────


def _objective_problems(ref: Any) -> list[SpecProblem]:
    if not isinstance(ref, str) or not ref:
        return []  # pydantic reports it
    import objectives  # lazily: the service imports this module, objectives need not be loaded

    if ref in objectives.BUILTINS:
        # Ours, so it resolves: importing it here would load torch into the driver (~2 s
        # before `liandan run` starts anything), which never trains.
        return []
    try:
        objectives.resolve(ref)
    except objectives.ObjectiveNotFound as exc:
        message = str(exc)
    # Resolving imports the user's module, whose import can fail in any way: that is a problem
    # with the spec's objective, not a crash of the service.
    except Exception as exc:
        message = f"the objective failed to load: {type(exc).__name__}: {exc}"
    else:
        return []
    return [SpecProblem("objective", ref, StudySpec.model_fields["objective"].description or "",
                        message)]


def _ordered(problems: list[SpecProblem]) -> list[SpecProblem]:
    """One problem per path (the first found), sorted by the spec's section order."""
    unique: dict[str, SpecProblem] = {}
    for problem in problems:
        unique.setdefault(problem.path, problem)
    order = {name: i for i, name in enumerate(StudySpec.model_fields)}
    section = re.compile(r"[^.\[]*")
    return sorted(unique.values(),
                  key=lambda p: order.get(section.match(p.path).group(), len(order)))


ObjectiveCheck = Callable[[str], list[SpecProblem]]


def validate_spec(data: Any, check_objective: bool | ObjectiveCheck = True) -> StudySpec:
    """The StudySpec of a parsed spec, or SpecError naming every problem in it.

    `check_objective=True` imports the objective (`liandan run`: any import path);
    `False` skips it (for callers that have no access to the user's code, and for tests);
    a function checks it instead of importing (the service's allow-list,
    service/server/allowed.py), its problems named with the others.
    """
    if not isinstance(data, dict):
        raise SpecError([SpecProblem("<root>", data, "a mapping with keys name, objective, ...",
                                     "a spec must be a mapping")])
    problems: list[SpecProblem] = []
    spec: StudySpec | None = None
    try:
        spec = StudySpec.model_validate(data, context={_SEMANTICS_CHECKED: True})
    except ValidationError as exc:
        problems += [_problem_from_pydantic(error) for error in exc.errors()]
    problems += _semantic_problems(data)  # after pydantic's, which win where both speak
    objective = data.get("objective")
    if callable(check_objective):
        if isinstance(objective, str) and objective:  # else pydantic reports it
            problems += check_objective(objective)
    elif check_objective:
        problems += _objective_problems(objective)
    if problems or spec is None:
        raise SpecError(_ordered(problems))
    return spec


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float and refuses duplicate keys.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so `1e-4` would
    arrive as the string "1e-4"; and it silently keeps the last of two equal keys, which would
    drop half of a spec without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    """The data in spec YAML `text` (1e-4 a float, duplicate keys refused), not yet validated;
    SpecError with one problem at `<yaml>` when it is malformed."""
    try:
        return yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is None:
            raise SpecError([SpecProblem("<yaml>", None, "valid YAML", str(exc))]) from None
        lines = text.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(
            "<yaml>", line, "valid YAML",
            f"line {mark.line + 1}, column {mark.column + 1}: {reason}")]) from None


def parse_spec(text: str, check_objective: bool = True) -> StudySpec:
    """The StudySpec in YAML `text`, or SpecError (malformed YAML: one problem at `<yaml>`)."""
    return validate_spec(read_yaml(text), check_objective)


def load_spec(path: str | Path, check_objective: bool = True) -> StudySpec:
    """The StudySpec in the YAML file at `path`, or SpecError (unreadable file: `<file>`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read: {exc}"
        problem = SpecProblem("<file>", str(path), "a readable UTF-8 YAML file", why)
        raise SpecError([problem]) from None
    return parse_spec(text, check_objective)
