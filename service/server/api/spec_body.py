"""A submitted spec, from the raw request body to a validated StudySpec.

The same validation as `liandan run` (service/spec/) with guards for text that comes off
the network: the body is bounded before it is read whole; YAML anchors and aliases are
refused (an alias bomb expands kilobytes into gigabytes), and so are nesting deeper than any
spec needs (PyYAML builds nested nodes recursively) and more nodes than any spec has, all
in one pass over the parser's events (libyaml's, when PyYAML has it) before a single object
is built: a megabyte of keys costs milliseconds to refuse, not the ~25 s of building and
validating them. The objective is checked against the service's allow-list by name and
never imported in this process (service/server/allowed.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from fastapi import HTTPException, Request, status

from service.plan import make_plan
from service.run.capacity import unschedulable
from service.spec import (
    ObjectiveCheck,
    SpecError,
    SpecProblem,
    StudySpec,
    read_yaml,
    validate_spec,
)

__all__ = ["JSON_TYPES", "MAX_DEPTH", "MAX_NODES", "YAML_TYPES", "limit_problems", "read_body",
           "spec_from_body"]

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json",)
MAX_DEPTH = 16  # a spec nests 3 deep (nuisance.lr.low); 16 leaves room for user params
# Every key, value and collection counts one. The largest committed spec has ~150; a grid
# of a few hundred values per parameter fits many times over.
MAX_NODES = 10_000
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_NODE = (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)
_EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the same events, ~10x faster
_TOO_DEEP = object()
_TOO_DEEP_PROBLEM = (f"at most {MAX_DEPTH} levels of nesting", "nested too deeply")
_TOO_BIG_PROBLEM = (f"at most {MAX_NODES} keys and values in all",
                    "far more keys and values than a study spec has")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it passes `limit` bytes (a chunked body has no length
    for the middleware to check up front)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(path: str, value: Any, allowed: str, message: str) -> SpecError:
    return SpecError([SpecProblem(path, value, allowed, message)])


def _check_yaml_events(text: str) -> None:
    """Refuse anchors, aliases, deep nesting and too many nodes from the event stream alone."""
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=_EVENT_LOADER):
            line = f"line {event.start_mark.line + 1}"
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise _problem("<yaml>", line, "plain YAML: no anchors (&name) or aliases "
                               "(*name)", "anchors and aliases are not accepted by the service")
            if isinstance(event, _NODE):
                nodes += 1
                if nodes > MAX_NODES:
                    raise _problem("<yaml>", line, *_TOO_BIG_PROBLEM)
            if isinstance(event, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _problem("<yaml>", line, *_TOO_DEEP_PROBLEM)
            elif isinstance(event, _CLOSE):
                depth -= 1
    except yaml.YAMLError:
        return  # read_yaml names the syntax error with its line and column


def _check_json_shape(value: Any) -> None:
    """The same depth and node limits on parsed JSON (json.loads is C: cheap to run first)."""
    nodes, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        nodes += 1 + (len(item) if isinstance(item, dict) else 0)  # a key is a node too
        if nodes > MAX_NODES:
            raise _problem("<json>", None, *_TOO_BIG_PROBLEM)
        if isinstance(item, dict | list):
            if level > MAX_DEPTH:
                raise _problem("<json>", None, *_TOO_DEEP_PROBLEM)
            todo += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]


def spec_from_body(body: bytes, content_type: str,
                   check_objective: bool | ObjectiveCheck = True) -> StudySpec:
    """The StudySpec in `body`; SpecError naming every problem; 415 for another media type.
    `check_objective`: how the objective is checked (the service's allow-list)."""
    if content_type not in YAML_TYPES + JSON_TYPES:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the spec as " + ", ".join(YAML_TYPES + JSON_TYPES))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _problem("<body>", None, "UTF-8 text", f"not UTF-8: {exc.reason} at byte "
                       f"{exc.start}") from None
    if content_type in JSON_TYPES:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _problem("<json>", None, "valid JSON", f"line {exc.lineno}, column "
                           f"{exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise _problem("<json>", None, *_TOO_DEEP_PROBLEM) from None
        _check_json_shape(data)
        return validate_spec(data, check_objective)
    _check_yaml_events(text)
    try:
        data = read_yaml(text)
    except RecursionError:
        raise _problem("<yaml>", None, *_TOO_DEEP_PROBLEM) from None
    return validate_spec(data, check_objective)


def _arms(spec: StudySpec) -> int:
    return math.prod(len(values) for values in spec.scientific.values())


def limit_problems(spec: StudySpec, max_trials: int,
                   nodes: Sequence[Mapping[str, Any]] | None) -> list[SpecProblem]:
    """What this service cannot run although the spec is valid: more trials than the
    operator allows (LIANDAN_MAX_TRIALS), or a trial no node of the cluster can hold
    (`nodes`: as Ray's `ray.nodes()` describes them; None while the cluster is not known)."""
    problems = []
    budget = spec.budget
    # Every arm plans at least one trial: past the cap on arms alone, no plan is built (the
    # product of a few long scientific lists is astronomical). Else the plan's own count.
    arms = _arms(spec)
    total = arms * (budget.trials + budget.seeds) if arms > max_trials else \
        make_plan(spec).total_trials
    if total > max_trials:
        problems.append(SpecProblem(
            "budget", {"arms": arms, "trials": budget.trials, "seeds": budget.seeds},
            f"at most {max_trials} trials in all: arms x (trials + seed re-runs) "
            "(LIANDAN_MAX_TRIALS)",
            f"the study plans {total} trials"))
    need = spec.resources
    if nodes is not None and (why := unschedulable(need.cpu, need.gpu, nodes)):
        problems.append(SpecProblem("resources", {"cpu": need.cpu, "gpu": need.gpu},
                                    "what one node of the cluster holds", why))
    return problems
