"""The report of one study without rule checks: counts, then the search (best trials,
history, importances) or, with arms, the arms (per-arm table, isolation plot, learning
curves); then Reproduce."""

from __future__ import annotations

import shlex
from pathlib import Path

from service.report import sections
from service.report.edges import search_space_warnings
from service.report.files import ReportPaths, created_now, report_paths, write_report
from service.report.reproduce import devices, reproduce_lines
from service.store.storage import describe, open_storage
from service.store.study_data import StudyData, load_study_data

__all__ = ["write_study_report"]


def write_study_report(storage_url: str | None, name: str, out_dir: str | Path = "reports", *,
                       data: StudyData | None = None, command: str | None = None) -> ReportPaths:
    """The report of study `name` (no rule checks): `<out_dir>/<name>.md/.json` and plots.

    Raises ReportNameError for an unsafe name and LookupError when no such study exists.
    """
    out, md_path, json_path, plot_dir = report_paths(out_dir, name)
    if data is None:
        data = load_study_data(open_storage(storage_url), name)
    if data is None:
        raise LookupError(f"no study {name!r} in {describe(storage_url or '')}")
    plot_dir.mkdir(parents=True, exist_ok=True)
    trials = [t for arm in data.arms for t in arm.trials]
    url = describe(storage_url) if storage_url else "the default storage"
    created = created_now()
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
               "device": devices(trials), "created": created,
               "search_space_warnings": search_space_warnings(data), "findings": []}
    return write_report(out, md_path, json_path, plot_dir, "\n".join(lines), payload, [data],
                  storage_url)
