"""Where a report goes: `<out>/<name>.md`, the ◆ findings JSON `<out>/<name>.json`, plots
under `<out>/<name>/`, and a note on every Optuna study it covers (the dashboard).

The study report (`service.report.study`) and the rulebook report
(`service.rulebook.report`) both write through `write_report`. The report generator never
starts trials: it reads what the storage holds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.report.notes import publish
from service.spec import NAME_PATTERN
from service.store.storage import open_storage
from service.store.study_data import StudyData

__all__ = ["ReportNameError", "ReportPaths", "check_name", "created_now", "report_paths",
           "write_report"]

NAME = re.compile(NAME_PATTERN)  # the spec's name rule: a safe file name


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


def check_name(name: str) -> str:
    """`name` if it is a valid study/report name, else ReportNameError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ReportNameError(f"invalid report name {name!r}: use 1-64 of a-z 0-9 _ -, "
                              "starting with a letter or digit")
    return name


def report_paths(out_dir: str | Path, name: str) -> tuple[Path, Path, Path, Path]:
    """(out, markdown, json, plot_dir), checked to stay inside `out`."""
    check_name(name)
    out = Path(out_dir).resolve()
    paths = (out / f"{name}.md", out / f"{name}.json", out / name)
    for p in paths:
        # The regex already forbids separators and dots; this guards the rule itself.
        if p.resolve().parent != out:
            raise ReportNameError(f"report name {name!r} leaves {out}")
    return (out, *paths)


def created_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_report(out: Path, md_path: Path, json_path: Path, plot_dir: Path, markdown: str,
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
