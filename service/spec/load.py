"""The entry points: spec YAML read safely (1e-4 a float, duplicate keys refused), validated
whole (pydantic's errors, the semantic checks and the objective, every problem at once)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from service.spec.model import SEMANTICS_CHECKED, StudySpec
from service.spec.problems import (
    SpecError,
    SpecProblem,
    problem_from_pydantic,
    semantic_problems,
)

__all__ = ["ObjectiveCheck", "load_spec", "parse_spec", "read_yaml", "validate_spec"]

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
        spec = StudySpec.model_validate(data, context={SEMANTICS_CHECKED: True})
    except ValidationError as exc:
        problems += [problem_from_pydantic(error) for error in exc.errors()]
    problems += semantic_problems(data)  # after pydantic's, which win where both speak
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
