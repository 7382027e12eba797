"""The rulebook report: the verdict table first, then a section per rule (the blog's words,
protocol, evidence, plots, verdict, literature), the studies read, and Reproduce."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.report import sections
from service.report.files import ReportPaths, created_now, report_paths, write_report
from service.report.reproduce import devices, reproduce_lines
from service.rulebook._base import Finding, RuleCheck
from service.rulebook.decision import family_text
from service.store.storage import describe
from service.store.study_data import StudyData

__all__ = ["ReportContext", "decided_by", "effect_text", "parts_lines", "rule_lines",
           "verdict_lines", "warnings_of", "write_rulebook_report"]


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
    procedure: str = ""  # a staged design's looks (service.rulebook.staging), under the family
    plan_alpha: float | None = None  # the level 'more needed' planned at, when not alpha



def _num(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def effect_text(f: Finding) -> str:
    """'0.012 [0.004, 0.02]': the effect with its 95% CI."""
    if f.effect is None:
        return "—"
    ci = "" if f.ci is None else f" [{_num(f.ci[0])}, {_num(f.ci[1])}]"
    return _num(f.effect) + ci


def decided_by(f: Finding) -> str:
    """'tost on final val accuracy (p 0.01, Holm 0.04)', or why nothing decided."""
    if f.decision is None:
        return "—" if not f.undecided_because else "edge of range"
    d = f.decision
    part = f" on {d['part']}" if len(f.parts) > 1 else ""
    look = f", look {d['look']}/{d['looks']} at alpha {d['alpha']:.3g}" if "look" in d else ""
    return f"{d['test']}{part} (p {_num(d['p'])}, Holm {_num(d['p_adjusted'])}{look})"


def verdict_lines(findings: list[Finding], procedure: str = "",
                  plan_alpha: float | None = None) -> list[str]:
    counts = {v: sum(f.verdict == v for f in findings)
              for v in ("supported", "contradicted", "inconclusive", "not_tested")}
    lines = ["## Verdicts", "",
             "| rule | claim | verdict | decided by | effect [95% CI] | p (Holm) |",
             "|---|---|---|---|---|---|"]
    for f in findings:
        lines.append(f"| [{f.rule}](#{f.rule.lower()}) | {sections.cell(f.claim)} | "
                     f"**{f.verdict}** | {sections.cell(decided_by(f))} | {effect_text(f)} | "
                     f"{_num(f.p_adjusted)} |")
    lines += ["", " · ".join(f"{k}: {v}" for k, v in counts.items()), "",
              family_text(findings, plan_alpha=plan_alpha), ""]
    return lines + ([procedure, ""] if procedure else [])


def parts_lines(f: Finding) -> list[str]:
    """Each part of the claim: its estimate and its hypotheses with raw and Holm p."""
    rows = []
    for part in f.parts:
        for h in part.hypotheses:
            rows.append({"part": part.claim, "part verdict": part.verdict, "effect":
                         part.effect, "95% CI": list(part.ci) if part.ci else None,
                         "hypothesis": h.role, "test": h.test, "margin": h.margin,
                         "p": h.p, "p (Holm)": h.p_adjusted})
    return ["### Parts and tests", "", *sections.table_lines(rows), ""] if rows else []


def warnings_of(findings: list[Finding]) -> list[dict]:
    """The search-space warnings of every finding, each once (the ◆ JSON's top-level list)."""
    seen, out = set(), []
    for f in findings:
        for w in f.search_space_warnings:
            key = (w["study"], w["arm"], w["param"])
            if key not in seen:
                seen.add(key)
                out.append(w)
    return out


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
        lines += [f"- decided by: {decided_by(f)}",
                  f"- metric `{f.metric}`; effect {effect_text(f)}; p = {_num(f.p_value)}, "
                  f"Holm-adjusted p = {_num(f.p_adjusted)}; n = {list(f.n)}",
                  f"- method: {f.method or '—'}", ""]
        if f.undecided_because:
            lines += [f"- {f.undecided_because}", ""]
        lines += parts_lines(f)
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
    out, md_path, json_path, plot_dir = report_paths(out_dir, name)
    plot_dir.mkdir(parents=True, exist_ok=True)
    ran = [d for d in context.studies.values() if d is not None]
    trials = [t for d in ran for arm in d.arms for t in arm.trials]
    url = describe(context.storage_url) if context.storage_url else "the default storage"
    budget = f" · budget {context.budget}" if context.budget else ""
    created = created_now()
    lines = [f"# Rulebook report: {name}", "",
             f"objective `{context.objective}`{budget} · storage `{url}` · "
             f"device {devices(trials)} · created {created}", ""]
    lines += [f"*{note}*" for note in context.notes] + ([""] if context.notes else [])
    lines += verdict_lines(findings, context.procedure, context.plan_alpha)
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
               "created": created, "search_space_warnings": warnings_of(findings),
               "findings": [f.to_json() for f in findings]}
    return write_report(out, md_path, json_path, plot_dir, "\n".join(lines), payload, ran,
                  context.storage_url)
