"""Reports: finished trials as markdown, the ◆ findings JSON, PNG plots and a dashboard note.

    StudyData ──► write_study_report ────┐                  reports/<name>.md
    Findings + ReportContext ──►         ├─► markdown ──►   reports/<name>.json  (◆)
                 write_rulebook_report ──┘                  reports/<name>/*.png
                                                            + a note on every Optuna study

A study without rule checks gets a search report (best trials, history, importances) or,
with arms, an arm report (per-arm table, isolation plot, learning curves). A rulebook
report opens with the verdict table and gives each rule its own section. Both end with
Reproduce. The report generator never starts trials: it reads what the storage holds.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import report_sections as sections
from service.notes import publish
from service.reproduce import devices, reproduce_lines
from service.rulebook._base import Finding, RuleCheck, StudyData, load_study_data
from service.storage import describe, open_storage

__all__ = ["ReportContext", "ReportNameError", "ReportPaths", "check_name",
           "write_rulebook_report", "write_study_report"]

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # the spec's name rule: a safe file name


class ReportNameError(ValueError):
    """A report name that could leave the reports folder, or is not a study name."""


@dataclass
class ReportPaths:
    """What a report wrote."""

    markdown: Path
    json: Path
    plot_dir: Path
    plots: list[Path] = field(default_factory=list)
    noted: list[str] = field(default_factory=list)  # Optuna studies whose note was saved
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReportContext:
    """Everything a rulebook report shows besides the findings.

    `studies` maps a spec stem (or study name) to what the storage holds for it (None when
    it did not run); `checks` gives each rule's words and literature.
    """

    objective: str
    studies: Mapping[str, StudyData | None] = field(default_factory=dict)
    checks: Mapping[str, RuleCheck] = field(default_factory=dict)
    storage_url: str | None = None
    command: str = ""
    wall_s: float | None = None
    budget: str | None = None
    errors: Mapping[str, str] = field(default_factory=dict)  # stem -> why it did not run
    notes: list[str] = field(default_factory=list)  # said once, under the title


def check_name(name: str) -> str:
    """`name` if it is a valid study/report name, else ReportNameError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ReportNameError(f"invalid report name {name!r}: use 1-64 of a-z 0-9 _ -, "
                              "starting with a letter or digit")
    return name


def _paths(out_dir: str | Path, name: str) -> tuple[Path, Path, Path, Path]:
    """(out, markdown, json, plot_dir), checked to stay inside `out`."""
    check_name(name)
    out = Path(out_dir).resolve()
    paths = (out / f"{name}.md", out / f"{name}.json", out / name)
    for p in paths:
        # The regex already forbids separators and dots; this guards the rule itself.
        if p.resolve().parent != out:
            raise ReportNameError(f"report name {name!r} leaves {out}")
    return (out, *paths)


def _created() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(out: Path, md_path: Path, json_path: Path, plot_dir: Path, markdown: str,
           payload: dict[str, Any], studies: list[StudyData],
           storage_url: str | None) -> ReportPaths:
    md_path.write_text(markdown, encoding="utf-8")
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)
                         + "\n", encoding="utf-8")
    # Only the plots this markdown shows: a folder may hold older ones from an earlier run.
    targets = [(rel, p) for p in sorted(plot_dir.glob("*.png"))
               if f"]({(rel := p.relative_to(out).as_posix())})" in markdown]
    result = ReportPaths(md_path, json_path, plot_dir, [p for _, p in targets])
    storage = open_storage(storage_url)
    uploaded: dict[str, str] = {}  # each plot stored once; every arm's note links to it
    for data in studies:
        for arm in data.arms:
            try:
                result.warnings += publish(storage, arm.study_name, markdown, targets,
                                           plot_dir / "artifacts", full_path=str(md_path),
                                           uploaded=uploaded)
            except Exception as exc:  # noqa: BLE001 - the files are written; say what failed
                result.warnings.append(f"note not saved on {arm.study_name}: {exc}")
            else:
                result.noted.append(arm.study_name)
    return result


# ------------------------------------------------------------------ study report
def write_study_report(storage_url: str | None, name: str, out_dir: str | Path = "reports", *,
                       data: StudyData | None = None, command: str | None = None) -> ReportPaths:
    """The report of study `name` (no rule checks): `<out_dir>/<name>.md/.json` and plots.

    Raises ReportNameError for an unsafe name and LookupError when no such study exists.
    """
    out, md_path, json_path, plot_dir = _paths(out_dir, name)
    if data is None:
        data = load_study_data(open_storage(storage_url), name)
    if data is None:
        raise LookupError(f"no study {name!r} in {describe(storage_url or '')}")
    plot_dir.mkdir(parents=True, exist_ok=True)
    trials = [t for arm in data.arms for t in arm.trials]
    url = describe(storage_url) if storage_url else "the default storage"
    created = _created()
    lines = [f"# Study report: {name}", "",
             f"objective `{data.spec.get('objective', '?')}` · metric `{data.metric}` "
             f"({data.direction}) · storage `{url}` · device {devices(trials)} · "
             f"created {created}", ""]
    lines += sections.counts_lines(data)
    has_arms = len(data.arms) > 1 or any(arm.label for arm in data.arms)
    if has_arms:
        lines += sections.arms_lines(data, plot_dir, rel=name)
    else:
        lines += sections.search_lines(data, plot_dir, rel=name)
    storage_args = ["--storage", describe(storage_url)] if storage_url else []
    commands = [
        shlex.join(["liandan", "run", f"{name}.yaml", *storage_args])
        + "   # run (or resume) the study",
        (command or shlex.join(["liandan", "report", name, *storage_args, "--out",
                                str(out_dir)])) + "   # this report"]
    lines += reproduce_lines({name: data.spec}, trials, commands)
    payload = {"study": name, "objective": data.spec.get("objective", ""),
               "device": devices(trials), "created": created, "findings": []}
    return _write(out, md_path, json_path, plot_dir, "\n".join(lines), payload, [data],
                  storage_url)


# ------------------------------------------------------------------ rulebook report
def _num(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def effect_text(f: Finding) -> str:
    """'0.012 [0.004, 0.02]': the effect with its 95% CI."""
    if f.effect is None:
        return "—"
    ci = "" if f.ci is None else f" [{_num(f.ci[0])}, {_num(f.ci[1])}]"
    return _num(f.effect) + ci


def verdict_lines(findings: list[Finding]) -> list[str]:
    counts = {v: sum(f.verdict == v for f in findings)
              for v in ("supported", "contradicted", "inconclusive", "not_tested")}
    lines = ["## Verdicts", "",
             "| rule | claim | verdict | effect [95% CI] | p (Holm) |", "|---|---|---|---|---|"]
    for f in findings:
        lines.append(f"| [{f.rule}](#{f.rule.lower()}) | {sections.cell(f.claim)} | "
                     f"**{f.verdict}** | {effect_text(f)} | {_num(f.p_adjusted)} |")
    lines += ["", " · ".join(f"{k}: {v}" for k, v in counts.items()), ""]
    return lines


def rule_lines(f: Finding, check: RuleCheck | None, out: Path, plot_dir: Path) -> list[str]:
    """One rule's section: the blog's words, protocol, evidence, plots, verdict, literature."""
    lines = [f"## {f.rule}", "", f"**Claim.** {f.claim}", ""]
    if check is not None:
        lines += [f"> {check.blog_zh}", ">", f"> *{check.blog_en}*", ""]
    if f.protocol:
        lines += ["### Protocol", "", f.protocol, ""]
    if f.table:
        lines += ["### Evidence", "", *sections.table_lines(f.table), ""]
    links = [sections.plot_link(p, out, plot_dir) for p in f.plots]
    if links:
        lines += ["### Plots", "", *[f"![{f.rule}: {Path(p).stem}]({p})" for p in links], ""]
    lines += ["### Verdict", "", f"**{f.verdict}.** {f.evidence}".rstrip(), ""]
    if f.verdict != "not_tested":
        lines += [f"- metric `{f.metric}`; effect {effect_text(f)}; p = {_num(f.p_value)}, "
                  f"Holm-adjusted p = {_num(f.p_adjusted)}; n = {list(f.n)}",
                  f"- method: {f.method or '—'}", ""]
    if check is not None and check.literature:
        lines += ["### Literature", "", check.literature, ""]
    if f.caveats:
        lines += ["### Caveats", "", *[f"- {c}" for c in f.caveats], ""]
    if f.verdict == "inconclusive":
        lines += ["### More needed", "", f.more_needed or "not estimated by the check", ""]
    return lines


def write_rulebook_report(findings: list[Finding], context: ReportContext,
                          out_dir: str | Path, name: str) -> ReportPaths:
    """One report for finalized `findings`: verdict table first, then a section per rule."""
    out, md_path, json_path, plot_dir = _paths(out_dir, name)
    plot_dir.mkdir(parents=True, exist_ok=True)
    ran = [d for d in context.studies.values() if d is not None]
    trials = [t for d in ran for arm in d.arms for t in arm.trials]
    url = describe(context.storage_url) if context.storage_url else "the default storage"
    budget = f" · budget {context.budget}" if context.budget else ""
    created = _created()
    lines = [f"# Rulebook report: {name}", "",
             f"objective `{context.objective}`{budget} · storage `{url}` · "
             f"device {devices(trials)} · created {created}", ""]
    lines += [f"*{note}*" for note in context.notes] + ([""] if context.notes else [])
    lines += verdict_lines(findings)
    for f in findings:
        lines += rule_lines(f, context.checks.get(f.rule), out, plot_dir)
    lines += ["## Studies", ""]
    for stem, data in context.studies.items():
        if data is None:
            why = context.errors.get(stem, "did not run")
            lines += [f"### {stem}", "", f"not run: {sections.cell(why)}", ""]
        else:
            lines += [f"### {data.name}", "", *sections.arm_table_lines(data), ""]
    commands = [context.command or "liandan rulebook"]
    lines += reproduce_lines({d.name: d.spec for d in ran}, trials, commands,
                             wall_s=context.wall_s)
    payload = {"study": name, "objective": context.objective, "device": devices(trials),
               "created": created, "findings": [f.to_json() for f in findings]}
    return _write(out, md_path, json_path, plot_dir, "\n".join(lines), payload, ran,
                  context.storage_url)
