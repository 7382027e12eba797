"""Which objectives `liandan serve` runs: the built-ins, and functions of the modules its
operator allows (`--allow-objective MODULE`, LIANDAN_ALLOW_OBJECTIVES=a,b.*).

An objective is code that runs with the worker's rights, so a spec naming `subprocess:run`
or `os:system` must never reach an import. Three checks, each where it belongs:

    API process   allowlist_problems(ref)   by name only: nothing is imported here, ever
    child process check_in_child(ref)       an allowed module that does not import, or has no
                                            such function, is a 422 too (its import-time
                                            output stays in the child)
    worker        check_runnable(ref)       imports it and checks the function is defined in an
                                            allowed module (not `from os import system`)
                                            before anything runs

`liandan run`, on one's own machine, accepts any import path (service.spec.validate_spec).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from objectives import BUILTINS
from service.spec import SpecProblem

__all__ = ["allowlist_problems", "check_in_child", "check_runnable", "module_allowed",
           "objective_check"]

# In the service an objective is `package.module:function`: one public name, no attribute
# path (`allowed_module:os.system` would reach any module the allowed one imports).
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
SERVICE_REF = re.compile(rf"({_IDENT}(?:\.{_IDENT})*):([A-Za-z][A-Za-z0-9_]*)")
CHECK_TIMEOUT_S = 60.0  # a module that imports torch takes seconds on a busy machine
_MARK = "liandan-objective-check:"


def is_builtin(ref: str) -> bool:
    return ref in BUILTINS or ref in BUILTINS.values()


def module_allowed(module: str, allowed: Sequence[str], ref: str | None = None) -> bool:
    """True when `module` (or the exact `ref`) is covered by an entry of `allowed`:
    `pkg.mod` that module, `pkg.*` the package and every module under it,
    `pkg.mod:function` that one function."""
    for entry in allowed:
        if ":" in entry:
            if ref is not None and ref == entry:
                return True
        elif entry.endswith(".*"):
            prefix = entry[:-2]
            if module == prefix or module.startswith(prefix + "."):
                return True
        elif module == entry:
            return True
    return False


def _allowed_text(allowed: Sequence[str]) -> str:
    return (f"a built-in ({', '.join(BUILTINS)}) or a function of an allowed module ("
            + (", ".join(allowed) if allowed else "none allowed") + ")")


def allowlist_problems(ref: str, allowed: Sequence[str]) -> list[SpecProblem]:
    """Is `ref` one this service may run? Decided from its name alone: imports nothing."""
    if is_builtin(ref):
        return []
    match = SERVICE_REF.fullmatch(ref)
    if match is None:
        return [SpecProblem("objective", ref, _allowed_text(allowed),
                            "in the service an objective is a built-in name or "
                            "package.module:function (one public function name)")]
    if not module_allowed(match.group(1), allowed, ref):
        return [SpecProblem(
            "objective", ref, _allowed_text(allowed),
            f"module {match.group(1)!r} is not allowed by this service: an objective is code "
            "that runs with the worker's rights; the operator allows a module with "
            "`liandan serve --allow-objective MODULE` or LIANDAN_ALLOW_OBJECTIVES")]
    return []


def check_runnable(ref: str, allowed: Sequence[str]) -> None:
    """Import the objective `ref` names (in a worker, or the check's child process) and
    check it may run here: PermissionError when it is not allowed, ObjectiveNotFound when it
    does not resolve. A built-in is ours and is not imported (that would load torch)."""
    import objectives

    if problems := allowlist_problems(ref, allowed):
        raise PermissionError(problems[0].message)
    if is_builtin(ref):
        return
    function = objectives.resolve(ref)
    # `allowed_module:system` after `from os import system` in it: the name is allowed, the
    # code is not. The function must be defined in an allowed module.
    defined_in = getattr(function, "__module__", None)
    if not isinstance(defined_in, str) or not module_allowed(defined_in, allowed, ref):
        raise PermissionError(f"{ref!r} is defined in module {defined_in!r}, which is not "
                              "allowed by this service")


def check_in_child(ref: str, allowed: Sequence[str],
                   timeout: float = CHECK_TIMEOUT_S) -> list[SpecProblem]:
    """Import an allowed objective in a child process and check it resolves to a function of
    an allowed module. The API process never imports user code; whatever the module does
    when imported (print, read files) happens in the child, whose output is dropped."""
    code = ("import json, sys\n"
            "from service.server.allowed import _child\n"
            "_child(sys.argv[1], sys.argv[2:])\n")
    env = dict(os.environ)
    # The child finds the user's modules where the worker will: the working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    env.pop("LIANDAN_TOKEN", None)
    try:
        done = subprocess.run([sys.executable, "-c", code, ref, *allowed], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [SpecProblem("objective", ref, "a module that imports within "
                            f"{timeout:.0f} s", "the objective's module did not finish "
                            "importing in time")]
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if not lines:
        return [SpecProblem("objective", ref, _allowed_text(allowed),
                            f"the objective's module failed to load (exit {done.returncode})")]
    message = json.loads(lines[-1][len(_MARK):])
    return [] if message is None else [SpecProblem("objective", ref, _allowed_text(allowed),
                                                   message)]


def _child(ref: str, allowed: list[str]) -> None:
    """The check, in the child process: one marked line with null or the problem."""
    import objectives

    try:
        check_runnable(ref, allowed)
        message = None
    except (PermissionError, objectives.ObjectiveNotFound) as exc:
        message = str(exc)
    except BaseException as exc:  # noqa: BLE001 - any failure of the user's import is the spec's
        message = f"the objective failed to load: {type(exc).__name__}: {exc}"
    sys.stdout.write("\n" + _MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


# Objectives that passed the child check lately: a burst of submissions of one objective
# costs one child process (~0.2 s), not one each. Only passes are kept (a fixed typo is
# checked at once); a module changed within the window is still checked by the worker.
_PASSED: dict[tuple[str, tuple[str, ...]], float] = {}
PASSED_TTL_S = 30.0


def objective_check(allowed: Sequence[str]) -> Callable[[str], list[SpecProblem]]:
    """What the API checks an objective with: the allow-list by name, then, for an allowed
    module, the import in a child process."""
    def check(ref: str) -> list[SpecProblem]:
        if problems := allowlist_problems(ref, allowed):
            return problems
        if is_builtin(ref):
            return []
        key, now = (ref, tuple(allowed)), time.monotonic()
        if _PASSED.get(key, 0.0) > now:
            return []
        problems = check_in_child(ref, allowed)
        if not problems:
            if len(_PASSED) > 1000:
                _PASSED.clear()
            _PASSED[key] = now + PASSED_TTL_S
        return problems

    return check
