"""What it takes to reproduce a report: specs, code version, packages, device, seeds, command.

Every report ends with this section (ARCHITECTURE.md). It is read from the trials and the
checkout, never from what the caller believes ran: the device is the one the trials
recorded, the seeds are the ones their parameters hold.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial

from service.store.study_data import devices as device_names

__all__ = ["CodeVersion", "code_version", "devices", "package_versions", "reproduce_lines",
           "seeds_used"]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "optuna", "ray", "optuna-dashboard")


@dataclass(frozen=True)
class CodeVersion:
    commit: str | None  # None outside a git checkout
    dirty: bool  # tracked files differ from the commit

    def __str__(self) -> str:
        if self.commit is None:
            return "unknown (not a git checkout)"
        return self.commit + (" + uncommitted changes (dirty)" if self.dirty else " (clean)")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> CodeVersion:
    """HEAD of the checkout the service runs from, and whether tracked files are modified.

    Untracked files (generated reports, a local database) do not make a checkout dirty.
    """
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return CodeVersion(None, False)
    status = _git("status", "--porcelain", "--untracked-files=no")
    return CodeVersion(commit, bool(status))


def package_versions() -> dict[str, str]:
    """python and the packages whose versions change results, from installed metadata.

    Read from metadata rather than imported: importing torch to print its version would
    cost a report seconds.
    """
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def devices(trials: Iterable[FrozenTrial]) -> str:
    """The devices the trials ran on ('cpu', a GPU's name, or several joined), or 'unknown'."""
    return ", ".join(device_names(trials)) or "unknown"


def seeds_used(trials: Iterable[FrozenTrial]) -> tuple[list[Any], list[Any]]:
    """(seeds of the tuning trials, seeds of the re-runs), each sorted and unique."""
    tune, reruns = set(), set()
    for t in trials:
        if "seed" not in t.params:
            continue
        (reruns if t.user_attrs.get("role") == "seed" else tune).add(t.params["seed"])
    return sorted(tune, key=str), sorted(reruns, key=str)


def _seed_text(seeds: list[Any]) -> str:
    if not seeds:
        return "none"
    if len(seeds) > 2 and all(isinstance(s, int) for s in seeds) and (
            seeds[-1] - seeds[0] == len(seeds) - 1):
        return f"{seeds[0]}–{seeds[-1]} ({len(seeds)})"
    return ", ".join(map(str, seeds))


def machine() -> str:
    """Where this report was made: OS, CPU count and memory (the trials' device is above)."""
    import os
    import platform

    import psutil

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM")


def trial_span_s(trials: Iterable[FrozenTrial]) -> float | None:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if not starts or not ends:
        return None
    return (max(ends) - min(starts)).total_seconds()


def reproduce_lines(specs: Mapping[str, Mapping[str, Any]], trials: list[FrozenTrial],
                    commands: list[str], *, wall_s: float | None = None,
                    heading: str = "## Reproduce") -> list[str]:
    """The Reproduce section as markdown lines.

    `specs` maps a study name to its spec as stored (`StudySpec.model_dump(mode="json")`),
    so the YAML shown is exactly what ran, defaults included.
    """
    lines = [heading, ""]
    for name, spec in specs.items():
        lines += [f"Spec of `{name}` (save as `{name}.yaml`):", "", "```yaml",
                  yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True).rstrip(),
                  "```", ""]
    versions = package_versions()
    tune, reruns = seeds_used(trials)
    lines += [
        f"- code version: `{code_version()}`",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- device: {devices(trials)}",
        f"- machine: {machine()}",
        f"- seeds: tuning {_seed_text(tune)}; seed re-runs {_seed_text(reruns)}",
    ]
    if wall_s is not None:
        lines.append(f"- wall time of this command: {wall_s:.1f} s")
    span = trial_span_s(trials)
    if span is not None:
        lines.append(f"- trials ran over {span:.0f} s, first start to last end "
                     "(across resumed runs too)")
    lines += ["", "Command:", "", "```sh", *commands, "```", ""]
    return lines
