"""A spec's problems: each names its dotted path, the value given and what is allowed;
pydantic's errors are translated into them, and the semantic checks pydantic's field types
cannot express run on the raw dict, so they run even where pydantic rejected a field."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
)
from pydantic_core import ErrorDetails

from service.records import finite
from service.spec.model import (
    CATEGORICAL_PARAMETERS,
    DECAYS,
    INT_PARAMETERS,
    MAX_GRID_POINTS,
    METRIC_DIRECTIONS,
    OPTIMIZERS,
    RULE_ID,
    SCALAR_ALLOWED,
    Range,
    StudySpec,
    _range_kind,
)

__all__ = ["SpecError", "SpecProblem", "problem_from_pydantic", "semantic_problems"]


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


def problem_from_pydantic(error: ErrorDetails) -> SpecProblem:
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


def semantic_problems(data: dict[str, Any]) -> list[SpecProblem]:
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
