"""Running one look's specs: each as this objective's study, its evidence seeds scaled to the
look, adapted by the checks that read it (R10 places its arms from its scan), and its arms
shared with identical arms trained before it (`service.rulebook.sharing`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from service.report.files import check_name
from service.rulebook._base import RuleCheck
from service.rulebook.sharing import Sharer
from service.spec import StudySpec, load_spec, validate_spec
from service.store.study_data import StudyData, load_study_data

__all__ = ["LookRun", "run_specs", "slug", "spec_for", "study_name"]

MAX_NAME = 64


def slug(text: str) -> str:
    """`text` as a name part: lowercase, runs of anything but a-z 0-9 as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "objective"


def join_name(prefix: str, objective: str, suffix: str = "") -> str:
    """prefix-slug(objective)suffix, at most 64 characters; a slug cut short gets a hash of
    the whole so two long objective names cannot share a study."""
    import hashlib

    part = slug(objective)
    room = MAX_NAME - len(prefix) - len(suffix) - 1
    if len(part) > room:
        digest = hashlib.sha1(part.encode()).hexdigest()[:8]
        part = part[:room - 9].rstrip("-") + "-" + digest
    return check_name(f"{prefix}-{part}{suffix}")


def study_name(stem: str, objective: str) -> str:
    """The study a rulebook spec becomes for `objective`: 'batch-generalization-digits-cnn'."""
    return join_name(stem, objective)


@dataclass
class LookRun:
    """What running a look's specs did."""

    ran: dict[str, str] = field(default_factory=dict)  # stem -> study name that ran
    errors: dict[str, str] = field(default_factory=dict)  # stem -> why it did not run
    seeds: dict[str, int] = field(default_factory=dict)  # stem -> evidence seeds per arm
    started: int = 0  # trials trained
    shared: int = 0  # trials copied from identical arms instead of trained
    wall_s: float = 0.0


def spec_for(path: Path, objective: str, factor: int, readers: list[RuleCheck],
             earlier: Mapping[str, StudyData | None]) -> StudySpec:
    """The spec `path` as this objective's study, with `factor` x its evidence seeds, as the
    checks reading it adapt it (given the studies their earlier specs left)."""
    stem = path.stem
    base = load_spec(path, check_objective=False).model_dump(mode="json")
    base = {**base, "objective": objective, "name": study_name(stem, objective)}
    base["budget"] = {**base["budget"], "seeds": base["budget"]["seeds"] * factor}
    for check in readers:
        base = check.adapt(stem, base, {s: earlier.get(s) for s in check.specs
                                        if s != stem})
    return validate_spec(base)


def run_specs(stems: list[str], folder: Path, objective: str, storage, storage_url: str | None,
              ray_address: str | None, *, factor: int, checks: Mapping[str, RuleCheck],
              sharer: Sharer | None, known: dict[str, str], show_progress: bool,
              console: Console) -> LookRun:
    """Run each spec at this look (Ray already up); `known` (stem -> study name of every spec
    run so far) grows as they run."""
    import time

    from service.run.runner import run_study

    t0 = time.perf_counter()
    look = LookRun()
    for i, stem in enumerate(stems, 1):
        console.print(f"[{i}/{len(stems)}] {escape(stem)} on {escape(objective)}")
        path = folder / f"{stem}.yaml"
        try:
            if not path.is_file():
                raise FileNotFoundError(f"no spec {path}")
            readers = [c for c in checks.values() if stem in c.specs]
            earlier = {s: load_study_data(storage, name) for s, name in known.items()
                       if any(s in c.specs for c in readers)}
            spec = spec_for(path, objective, factor, readers, earlier)
            copied = sharer.share(spec) if sharer is not None else 0
            result = run_study(spec, storage_url, ray_address=ray_address,
                               show_progress=show_progress, console=console)
            if sharer is not None:
                sharer.register(spec)
            look.started += result.started
            look.shared += copied
            look.ran[stem] = known[stem] = spec.name
            look.seeds[stem] = spec.budget.seeds
            console.print(f"  {escape(spec.name)}: {result.started} trials run in "
                          f"{result.wall_s:.1f} s" + (f", {copied} shared" if copied else "")
                          + (" (already complete)" if not result.started else ""))
        except Exception as exc:  # noqa: BLE001 - a failed study fails only its rules
            look.errors[stem] = f"{type(exc).__name__}: {exc}"
            console.print(f"  [red]failed[/red]: {escape(look.errors[stem])}")
    look.wall_s = time.perf_counter() - t0
    return look
