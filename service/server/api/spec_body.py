"""A submitted spec, from the raw request body to a validated StudySpec.

The same validation as `liandan run` (service/spec.py) with three guards for text that comes
off the network: the body is bounded before it is read whole, YAML anchors and aliases are
refused (an alias bomb expands kilobytes into gigabytes) and so is nesting deeper than any
spec needs (PyYAML builds nested nodes recursively).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import HTTPException, Request, status

from objectives import BUILTINS
from service.spec import SpecError, SpecProblem, StudySpec, read_yaml, validate_spec

__all__ = ["JSON_TYPES", "MAX_DEPTH", "YAML_TYPES", "read_body", "spec_from_body"]

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json",)
MAX_DEPTH = 16  # a spec nests 3 deep (nuisance.lr.low); 16 leaves room for user params
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_TOO_DEEP = object()


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
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise _problem("<yaml>", f"line {mark.line + 1}", "plain YAML: no anchors "
                               "(&name) or aliases (*name)",
                               "anchors and aliases are not accepted by the service")
            if isinstance(event, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _problem("<yaml>", f"line {event.start_mark.line + 1}",
                                   f"at most {MAX_DEPTH} levels of nesting", "nested too deeply")
            elif isinstance(event, _CLOSE):
                depth -= 1
    except yaml.YAMLError:
        return  # parse_spec names the syntax error with its line and column


def _depth(value: Any) -> int:
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            todo += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _validate(data: Any) -> StudySpec:
    # A built-in objective is known without importing it (which would load torch into the
    # API process); any other is imported here, exactly as `liandan run` would.
    objective = data.get("objective") if isinstance(data, dict) else None
    return validate_spec(data, check_objective=objective not in BUILTINS)


def spec_from_body(body: bytes, content_type: str) -> StudySpec:
    """The StudySpec in `body`; SpecError naming every problem; 415 for another media type."""
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
            data = _TOO_DEEP
        if data is _TOO_DEEP or _depth(data) > MAX_DEPTH:
            raise _problem("<json>", None, f"at most {MAX_DEPTH} levels of nesting",
                           "nested too deeply")
        return _validate(data)
    _check_yaml_events(text)
    try:
        data = read_yaml(text)
    except RecursionError:
        raise _problem("<yaml>", None, f"at most {MAX_DEPTH} levels of nesting",
                       "nested too deeply") from None
    return _validate(data)
