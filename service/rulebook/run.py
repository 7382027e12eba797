"""Run the rulebook: every rule's study on one objective, then one combined report.

    rules ──► specs (search_spaces/rulebook/<budget>/<stem>.yaml, each run once)
          ──► run_study per spec (objective and name replaced; resumes from the storage)
          ──► each RuleCheck on its studies ──► finalize (Holm across the report)
          ──► reports/rulebook-<objective>-<budget>.md/.json

A rule that cannot be tested says why instead of being skipped: no check implemented yet,
the objective does not honour a parameter the rule needs, or its study failed to run.
`report_study` is the one-study form behind `liandan report`.
"""

from __future__ import annotations

import shlex
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from service.report.files import ReportPaths, check_name
from service.report.study import write_study_report
from service.rulebook import registry
from service.rulebook._base import ALPHA, Finding, RuleCheck
from service.rulebook._base import not_tested as _not_tested
from service.rulebook.decision import finalize
from service.rulebook.execute import LookRun, join_name, run_specs, slug, study_name
from service.rulebook.report import ReportContext, write_rulebook_report
from service.rulebook.sharing import Sharer
from service.rulebook.staging import STAGES, Stages, decide_look, procedure_text, stageable
from service.spec import load_spec
from service.store.storage import describe, open_storage
from service.store.study_data import StudyData, load_study_data

__all__ = ["BUDGETS", "RulebookResult", "honoured_params", "report_study", "rulebook_name",
           "run_rulebook", "slug", "study_name"]

ROOT = Path(__file__).resolve().parents[2]
SPECS_DIR = ROOT / "search_spaces" / "rulebook"
BUDGETS = tuple(STAGES)  # small, medium, full
DEFAULT_OBJECTIVE = "digits_cnn"
# The blog's claims (RULES.md), for rules whose check does not exist yet: their finding
# still needs a claim in the ◆ JSON.
CLAIMS = {
    "R1": "Power-of-two batch sizes run faster on a GPU than multiples of ten",
    "R2": "Too-small batches give noisy gradients; loss oscillates and may not converge",
    "R3": "Larger batches run faster per epoch but need more epochs to reach the same accuracy",
    "R4": "Too-large batches fall into poor minima (worse generalization)",
    "R5": "SGD with momentum moves faster than plain SGD and can escape local minima",
    "R6": "AdaGrad's effective learning rate decays too early and too much",
    "R7": "RMSProp fixes AdaGrad with an exponentially weighted average",
    "R8": "Adam converges fast but generalizes worse; momentum + cosine decay converges well",
    "R9": "Multiply batch size by k, multiply the learning rate by k (linear scaling)",
    "R10": "Warmup stabilizes the start of training at large learning rates",
    "R11": "Cosine decay to zero is a good, low-effort schedule",
    "R12": "BatchNorm in conv nets helps",
    "R13": "Weight decay is the best way to improve generalization",
    "R14": "Data augmentation improves generalization",
}


# ------------------------------------------------------------------ names
def rulebook_name(objective: str, budget: str) -> str:
    """The combined report's name: 'rulebook-digits-cnn-small'."""
    return join_name("rulebook", objective, f"-{budget}")


# ------------------------------------------------------------------ the objective's parameters
def honoured_params(objective: str) -> tuple[frozenset[str] | None, str]:
    """(the standard parameters `objective` honours, or None for 'assume all'; a note).

    Built-ins honour every standard name. A user objective may declare its own as a
    `params` attribute on the function; one that does not is assumed to honour what it is
    given, and the note says so in the report.
    """
    import objectives

    if objective in objectives.BUILTINS:
        return frozenset(objectives.DEFAULTS), ""
    fn = objectives.resolve(objective)
    declared = getattr(fn, "params", None)
    if isinstance(declared, set | frozenset | list | tuple):
        return frozenset(map(str, declared)), ""
    return None, (f"The objective `{objective}` does not declare the parameters it honours "
                  "(a `params` attribute); it is assumed to honour every parameter a rule's "
                  "spec gives it.")


# ------------------------------------------------------------------ running
@dataclass
class RulebookResult:
    findings: list[Finding]
    paths: ReportPaths
    wall_s: float
    studies: dict[str, str] = field(default_factory=dict)  # stem -> study name, that ran
    errors: dict[str, str] = field(default_factory=dict)  # stem -> why it did not run
    looks: int = 1  # looks taken (a staged budget may stop before its last)
    shared: int = 0  # trials copied from identical arms instead of trained


def _claim(rule: str, check: RuleCheck | None) -> str:
    return check.claim if check is not None else CLAIMS.get(rule, rule)


def _selected(rules: Iterable[str] | None) -> list[str]:
    if rules is None:
        return list(registry.RULE_IDS)
    chosen = [r.strip().upper() for r in rules if r.strip()]
    unknown = [r for r in chosen if r not in registry.RULE_IDS]
    if unknown:
        raise ValueError(f"unknown rule IDs {', '.join(unknown)}: use R1 to R14")
    return [r for r in registry.RULE_IDS if r in chosen]  # registry order, each once


def _check(check: RuleCheck, studies: dict[str, StudyData | None], plot_dir: Path,
           console: Console) -> Finding:
    try:
        finding = check.check(studies, plot_dir)
    except Exception as exc:  # noqa: BLE001 - one broken check must not lose the report
        console.print(f"check {check.rule} failed:\n{traceback.format_exc()}", markup=False,
                      style="red")
        return _not_tested(check.rule, check.claim,
                           f"the check failed: {type(exc).__name__}: {exc}")
    if not finding.studies:
        finding.studies = [d.name for d in studies.values() if d is not None]
    return finding


def _plan(selected: list[str], checks: dict[str, RuleCheck], objective: str,
          honoured: frozenset[str] | None) -> tuple[dict[str, Finding], list[str]]:
    """(findings of the rules that cannot be tested, the spec stems the others need)."""
    findings: dict[str, Finding] = {}
    stems: list[str] = []  # each spec once, in the order the rules first need it
    for rule in selected:
        check = checks.get(rule)
        if check is None:
            findings[rule] = _not_tested(rule, _claim(rule, None), "no check implemented")
            continue
        if (why := _lacking(check, objective, honoured)) is not None:
            findings[rule] = _not_tested(rule, check.claim, why)
            continue
        stems += [s for s in check.specs if s not in stems]
    return findings, stems


def _lacking(check: RuleCheck, objective: str, honoured: frozenset[str] | None) -> str | None:
    """Why `objective` cannot test `check`'s rule, or None when it can."""
    lacking = sorted(set(check.needs) - honoured) if honoured is not None else []
    if not lacking:
        return None
    return (f"the objective {objective} does not honour {', '.join(lacking)}, "
            "which this rule needs")


def run_rulebook(objective: str = DEFAULT_OBJECTIVE, budget: str = "small",
                 rules: Iterable[str] | None = None, out_dir: str | Path = "reports",
                 storage_url: str | None = None, ray_address: str | None = None, *,
                 specs_dir: str | Path | None = None, show_progress: bool = False,
                 command: str = "", console: Console | None = None,
                 max_wall_s: float | None = None, share: bool = True) -> RulebookResult:
    """Run every selected rule's studies on `objective` and write one combined report.

    `rules` defaults to every rule, in registry order; `specs_dir` to the project's
    `search_spaces/rulebook` (it holds one folder per budget). A budget with several looks
    (`staging.STAGES`, e.g. medium) adds evidence seeds in stages to the studies of rules not
    yet decided, until every such rule is decided, the looks are spent, or the next look would
    end past `max_wall_s` (default: the budget's). With `share`, an arm identical to one
    trained before is copied, not trained again. Raises ValueError for an unknown budget or
    rule ID; everything else that goes wrong becomes a not_tested finding.
    """
    t0 = time.perf_counter()
    console = console or Console()
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}: use {' or '.join(BUDGETS)}")
    stages = STAGES[budget]
    wall_limit = max_wall_s if max_wall_s is not None else stages.max_wall_s
    selected = _selected(rules)
    checks = registry.all_checks()
    name = rulebook_name(objective, budget)
    notes: list[str] = []
    try:
        honoured, note = honoured_params(objective)
        notes += [note] if note else []
    except Exception as exc:  # noqa: BLE001 - an objective that does not load tests nothing
        why = f"the objective {objective!r} did not load: {type(exc).__name__}: {exc}"
        fixed = {r: _not_tested(r, _claim(r, checks.get(r)), why) for r in selected}
        stems: list[str] = []
    else:
        fixed, stems = _plan(selected, checks, objective, honoured)

    storage = open_storage(storage_url)
    plot_dir = Path(out_dir) / name
    plot_dir.mkdir(parents=True, exist_ok=True)
    tested = {r: checks[r] for r in selected if r not in fixed}
    alphas = stages.alphas(ALPHA)
    known: dict[str, str] = {}
    errors: dict[str, str] = {}
    decided: dict[str, Finding] = {}
    current: dict[str, Finding] = {}
    data: dict[str, StudyData | None] = {stem: None for stem in stems}
    seeds_at: list[dict[str, int]] = []
    sharer = Sharer(storage) if share else None
    active, stopped = list(stems), "every look was taken"
    started_ray = _start_ray(ray_address) if stems else False
    try:
        for look in range(stages.looks):
            ran = run_specs(active, Path(specs_dir or SPECS_DIR) / budget, objective, storage,
                            storage_url, ray_address, factor=stages.factors[look],
                            checks=tested, sharer=sharer, known=known,
                            show_progress=show_progress, console=console)
            errors.update(ran.errors)
            seeds_at.append({**(seeds_at[-1] if seeds_at else {}), **ran.seeds})
            data.update({stem: load_study_data(storage, known[stem]) for stem in ran.ran})
            current = _evaluate(tested, decided, fixed, data, errors, plot_dir, notes, console)
            for rule, f in fixed.items():
                current.setdefault(rule, f)  # not tested: outside the family, as finalize does
            decide_look(selected, current, decided, stages, look, {
                r: {s: seeds_at[-1].get(s, 0) for s in c.specs} for r, c in tested.items()})
            if look + 1 == stages.looks:
                break
            active = [s for s in stems if s in known and any(
                s in tested[r].specs and stageable(f) for r, f in current.items()
                if r in tested and r not in decided) and (data[s] is not None and data[s].spec.get(
                    "budget", {}).get("seeds", 0) > 0)]
            if not active:
                stopped = f"stopped after look {look + 1}: no undecided rule more seeds can decide"
                break
            if wall_limit is not None and (time.perf_counter() - t0) + _next_look_s(
                    ran, data, active, stages, look) > wall_limit:
                stopped = (f"stopped after look {look + 1}: the next look would end past the "
                           f"wall-time budget of {wall_limit:.0f} s")
                break
    finally:
        if started_ray:
            _stop_ray()
    findings = {**fixed, **current, **decided}
    ordered = [findings[r] for r in selected]
    wall_s = time.perf_counter() - t0
    context = ReportContext(
        objective=objective, studies=data, checks=checks, storage_url=storage_url,
        command=command or _command(objective, budget, selected, out_dir, storage_url),
        wall_s=wall_s, budget=budget, errors=errors, notes=notes,
        procedure=procedure_text(stages, ALPHA, len(seeds_at), seeds_at, stopped)
        + (f" Trials copied from identical arms instead of trained: {sharer.copied}."
           if sharer is not None and sharer.copied else ""),
        plan_alpha=alphas[-1] if stages.looks > 1 else None)
    paths = write_rulebook_report(ordered, context, out_dir, name)
    return RulebookResult(ordered, paths, wall_s, dict(known), errors,
                          looks=len(seeds_at), shared=sharer.copied if sharer else 0)


def _start_ray(address: str | None) -> bool:
    from service.run.runner import ensure_ray

    return ensure_ray(address)  # one Ray for every study: starting one costs seconds


def _stop_ray() -> None:
    from service.run.runner import stop_ray

    stop_ray()


def _evaluate(tested: dict[str, RuleCheck], decided: dict[str, Finding],
              fixed: dict[str, Finding], data: dict[str, StudyData | None],
              errors: dict[str, str], plot_dir: Path, notes: list[str],
              console: Console) -> dict[str, Finding]:
    """Every tested rule not yet decided, checked on the studies as they stand now."""
    out: dict[str, Finding] = {}
    for rule, check in tested.items():
        if rule in decided:
            continue
        failed = [f"{s}: {errors[s]}" for s in check.specs if s in errors]
        if failed:
            out[rule] = _not_tested(rule, check.claim, "its study did not run: "
                                    + "; ".join(failed))
            continue
        out[rule] = _check(check, {s: data.get(s) for s in check.specs}, plot_dir, console)
        if notes and out[rule].verdict != "not_tested":
            out[rule].caveats += notes
    return out


def _next_look_s(ran: LookRun, data: dict[str, StudyData | None], active: list[str],
                 stages: Stages, look: int) -> float:
    """The next look's time, estimated from this look's time per trial trained."""
    per_trial = ran.wall_s / max(ran.started, 1)
    more = 0
    for stem in active:
        study = data.get(stem)
        now = ran.seeds.get(stem) or 0
        if study is not None and now:
            more += len(study.arms) * (now // stages.factors[look] * stages.factors[look + 1]
                                       - now)
    return per_trial * more


def _command(objective: str, budget: str, rules: list[str], out_dir: str | Path,
             storage_url: str | None) -> str:
    """The `liandan rulebook` command that reruns (or resumes) this report."""
    args = ["liandan", "rulebook", "--objective", objective, "--budget", budget]
    if len(rules) < len(registry.RULE_IDS):
        args += ["--rules", ",".join(rules)]
    args += ["--out", str(out_dir)]
    if storage_url:
        args += ["--storage", describe(storage_url)]
    return shlex.join(args)


# ------------------------------------------------------------------ one study
def _stem_of(check: RuleCheck, data: StudyData, specs_dir: Path) -> str:
    """Which of `check.specs` the study `data` plays: its name's stem, else the spec file
    whose scientific parameters it shares, else the check's first spec."""
    stems = sorted(check.specs, key=len, reverse=True)
    for stem in stems:
        if data.name == stem or data.name.startswith(stem + "-"):
            return stem
    if len(check.specs) == 1:
        return check.specs[0]
    scientific = set(data.spec.get("scientific", {}))
    for stem in check.specs:
        for budget in BUDGETS:
            path = specs_dir / budget / f"{stem}.yaml"
            try:
                if path.is_file() and set(load_spec(path, False).scientific) == scientific:
                    return stem
            except Exception:  # noqa: BLE001 - an unreadable spec just doesn't match
                continue
    return check.specs[0]


def report_study(storage_url: str | None, name: str, out_dir: str | Path = "reports", *,
                 specs_dir: str | Path | None = None, command: str = "") -> ReportPaths:
    """`liandan report`: the study's rule checks if its spec lists rules that have one,
    else the plain study report."""
    check_name(name)
    data = load_study_data(open_storage(storage_url), name)
    if data is None:
        raise LookupError(f"no study {name!r} in {describe(storage_url or 'the storage')}")
    rules = [r for r in data.spec.get("rules") or [] if r in registry.RULE_IDS]
    checks = registry.all_checks()
    if not any(r in checks for r in rules):
        return write_study_report(storage_url, name, out_dir, data=data, command=command or None)
    plot_dir = Path(out_dir) / name
    plot_dir.mkdir(parents=True, exist_ok=True)
    objective = data.spec.get("objective", "")
    try:
        honoured, note = honoured_params(objective)
    except Exception as exc:  # noqa: BLE001 - the trials are there; the code may not be
        honoured, note = None, (f"The objective `{objective}` could not be loaded here "
                                f"({type(exc).__name__}), so the parameters it honours were "
                                "not checked.")
    findings = []
    for rule in rules:
        check = checks.get(rule)
        if check is None:
            findings.append(_not_tested(rule, _claim(rule, None), "no check implemented"))
            continue
        if (why := _lacking(check, objective, honoured)) is not None:
            findings.append(_not_tested(rule, check.claim, why))
            continue
        stem = _stem_of(check, data, Path(specs_dir or SPECS_DIR))
        studies: dict[str, StudyData | None] = {s: None for s in check.specs}
        studies[stem] = data
        findings.append(_check(check, studies, plot_dir, Console(stderr=True)))
    context = ReportContext(
        objective=objective, studies={data.name: data}, checks=checks,
        storage_url=storage_url, notes=[note] if note else [],
        command=command or shlex.join(["liandan", "report", name, "--out", str(out_dir)] + (
            ["--storage", describe(storage_url)] if storage_url else [])))
    return write_rulebook_report(finalize(findings), context, out_dir, name)
