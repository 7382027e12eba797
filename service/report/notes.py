"""A report inside optuna-dashboard: the markdown as the study's note, the plots as artifacts.

The note is what a user sees first in the dashboard, so it is the report itself with its
image links pointed at the dashboard's artifact route (`/artifacts/<study_id>/<id>`). The
dashboard serves those only when it runs with the same artifact store
(`optuna-dashboard --artifact-dir <out>/<name>/artifacts`); otherwise the links are dead
and the PNGs next to the markdown file remain the source.

Writing a report again replaces the note and overwrites each plot's artifact in place
(same artifact ID, keyed by the plot's path), so re-running `liandan report` does not pile
up copies in the dashboard's artifact list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from service.store.optuna_adapter import set_system_attr, study_id_of, system_attrs

__all__ = ["NOTE_MAX_CHARS", "publish", "trim_note"]

# The dashboard stores a note as 2,045-character study system attributes and loads all of
# them with every study page; 60k characters (~30 attributes) keeps that page fast.
NOTE_MAX_CHARS = 60_000
ARTIFACT_KEY = "liandan:artifact:"  # study system attr: plot path -> artifact ID
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def trim_note(markdown: str, limit: int = NOTE_MAX_CHARS, full_path: str = "") -> str:
    """`markdown` cut at the last section heading that fits under `limit` characters."""
    if len(markdown) <= limit:
        return markdown
    tail = f"\n\n*(Trimmed for the dashboard; the full report is {full_path or 'on disk'}.)*\n"
    cut = markdown.rfind("\n## ", 0, limit - len(tail))
    if cut <= 0:
        cut = markdown.rfind("\n", 0, limit - len(tail))
    return markdown[:max(cut, 0)] + tail


def _upload(study: optuna.Study, store: FileSystemArtifactStore, path: Path, key: str) -> str:
    attrs = system_attrs(study)
    artifact_id = attrs.get(ARTIFACT_KEY + key)
    if isinstance(artifact_id, str) and f"artifacts:{artifact_id}" in attrs:
        with path.open("rb") as f:
            store.write(artifact_id, f)  # same ID: the dashboard's entry now shows the new plot
        return artifact_id
    artifact_id = upload_artifact(study_or_trial=study, file_path=str(path),
                                  artifact_store=store, mimetype="image/png")
    set_system_attr(study, ARTIFACT_KEY + key, artifact_id)
    return artifact_id


def _dashboard_markdown(markdown: str, urls: dict[str, str]) -> str:
    def link(match: re.Match[str]) -> str:
        alt, target = match.groups()
        if target in urls:
            return f"![{alt}]({urls[target]})"
        return f"*(plot `{target}`, next to the report file)*"

    return IMAGE.sub(link, markdown)


def publish(storage: optuna.storages.BaseStorage, study_name: str, markdown: str,
            plots: Iterable[tuple[str, Path]], artifact_dir: Path,
            full_path: str = "", uploaded: dict[str, str] | None = None) -> list[str]:
    """Save `markdown` as the note of `study_name`, uploading `plots` first.

    `plots` pairs each link target used in `markdown` with the file it names. Returns
    warnings (an upload that failed leaves its image as a plain mention; the note is still
    saved).
    """
    warnings: list[str] = []
    study = optuna.load_study(study_name=study_name, storage=storage)
    # Artifact URLs name the study that holds them, and the dashboard serves them from any
    # page: a report shared by many arm studies uploads each plot once (`uploaded`).
    urls: dict[str, str] = uploaded if uploaded is not None else {}
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(str(artifact_dir))
    except OSError as exc:
        warnings.append(f"no artifact store at {artifact_dir}: {exc}")
        store = None
    for target, path in plots:
        if store is None or target in urls or f"]({target})" not in markdown:
            continue
        try:
            artifact_id = _upload(study, store, path, target)
        except Exception as exc:  # noqa: BLE001 - an upload problem must not lose the note
            warnings.append(f"{study_name}: plot {target} not uploaded: {exc}")
            continue
        urls[target] = f"/artifacts/{study_id_of(study)}/{artifact_id}"
    note = trim_note(_dashboard_markdown(markdown, urls), full_path=full_path)
    # Imported here: a machine without the dashboard (the GPU check's) still writes the
    # report's files, and the caller records the note as not saved.
    import optuna_dashboard

    optuna_dashboard.save_note(study, note)
    return warnings
