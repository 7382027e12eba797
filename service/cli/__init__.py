"""`liandan`: the command line (◆ contract in ARCHITECTURE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import optuna
import typer
from rich.markup import escape
from rich.table import Table

from service.cli.views import (
    api,
    api_status,
    client,
    console,
    dry_run_rulebook,
    dry_run_study,
    fmt,
    notify_end,
    status_table,
    table_console,
)
from service.spec import SpecError, load_spec
from service.store.storage import default_storage_url, describe

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="liandan (炼丹): hyperparameter studies on Optuna + Ray Tune.")

StorageOpt = Annotated[str | None, typer.Option(
    "--storage", help="Optuna storage URL (default: sqlite file liandan.db here, "
    "or $LIANDAN_STORAGE)")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="attach to an existing Ray cluster instead of starting one")]
DataRootOpt = Annotated[str | None, typer.Option(
    "--data-root", help="folder of torchvision data sets (default: $LIANDAN_DATA_ROOT)")]
CheckpointDirOpt = Annotated[str | None, typer.Option(
    "--checkpoint-dir", help="where trials of an objective that takes a checkpoint save it "
    "(default: a temporary folder here; on a cluster, a path every node reaches or a "
    "storage URI such as s3://bucket/path); removed as trials end")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="validate and print the plan and what it costs (trials, epochs, "
    "resources, and the time once this objective was measured); start nothing, write nothing")]
DASHBOARD_PORT = 8080


def _storage(url: str | None) -> str:
    return url or default_storage_url()


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(help="study spec (YAML)", metavar="SPEC")],
    storage: StorageOpt = None,
    ray_address: RayAddressOpt = None,
    data_root: DataRootOpt = None,
    checkpoint_dir: CheckpointDirOpt = None,
    progress: Annotated[bool, typer.Option(help="show the live progress bar")] = True,
    report: Annotated[bool, typer.Option(help="write the study's report at the end")] = True,
    out: Annotated[Path, typer.Option("--out", help="folder of the reports")] = Path("reports"),
    dry_run: DryRunOpt = False,
) -> None:
    """Run a study in-process on Ray, record it in the Optuna storage, write its report."""
    from service.run.runner import StudyConflict, StudyFailed, Unschedulable, run_study
    from service.store.status import study_statuses

    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        console.print(f"[red]invalid spec {spec_path}[/red] ({len(err.problems)} problems):")
        console.print(str(err), markup=False)
        raise typer.Exit(2) from None
    url = _storage(storage)
    if dry_run:
        dry_run_study(spec, url, ray_address)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says it better
    console.print(f"study [bold]{escape(spec.name)}[/bold] · objective {spec.objective} · "
                  f"storage {describe(url)}")
    try:
        result = run_study(spec, url, ray_address=ray_address, show_progress=progress,
                           data_root=data_root, console=console, checkpoint_dir=checkpoint_dir)
    except (StudyConflict, Unschedulable) as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        if isinstance(err, Unschedulable):  # it was to run and cannot: failed, as in serve
            notify_end(spec, url, "failed", error=str(err))
        raise typer.Exit(2) from None
    except StudyFailed as err:  # every trial failed: nothing measured, no report to write
        console.print(f"[red]study {escape(spec.name)} failed: {escape(str(err))}[/red]")
        notify_end(spec, url, "failed", error=str(err))
        raise typer.Exit(1) from None
    if result.started == 0:
        console.print("nothing to run: every trial of this study is already recorded")
    console.print(status_table(study_statuses(url, spec.name)))
    console.print(f"wall time {result.wall_s:.1f} s")
    console.print(f"results: {describe(url)} (study {spec.name!r})")
    if report:
        from service.rulebook.run import report_study

        paths = report_study(url, spec.name, out, command=f"liandan run {spec_path}")
        noted = "also a note in the dashboard" if paths.noted else "no dashboard note"
        console.print(f"report: {paths.markdown} (findings {paths.json}, "
                      f"{len(paths.plots)} plots; {noted})")
        for warning in paths.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"dashboard: liandan dashboard --storage '{url}'  → "
                  f"http://127.0.0.1:{DASHBOARD_PORT}/")
    notify_end(spec, url, "done", report=str(paths.markdown.resolve()) if report else None)


UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="the liandan API (`liandan serve`), e.g. http://127.0.0.1:8000; token from "
    "$LIANDAN_TOKEN or ./.liandan-token")]


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="study name (default: all)")] = None,
    storage: StorageOpt = None,
    url: UrlOpt = None,
) -> None:
    """Trial counts, best trials and seed re-runs of the studies in the storage (or, with
    --url, the service's view: queue state, progress, best trial)."""
    if url:
        api_status(url, study)
        return
    from service.store.status import study_statuses

    statuses = study_statuses(_storage(storage), study)
    if not statuses:
        console.print(f"no study {study!r}" if study else "no studies yet")
        raise typer.Exit(1 if study else 0)
    table_console().print(status_table(statuses))


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = DASHBOARD_PORT,
    reports_dir: Annotated[Path, typer.Option(
        "--reports-dir", help="reports folder: the report notes' plots are served from it")]
    = Path("reports"),
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Serve optuna-dashboard on the same storage. Changes made in it (rename, delete,
    notes) need the service token ($LIANDAN_TOKEN, else ./.liandan-token, written if
    missing): open /?token=TOKEN once. Off loopback every request needs it."""
    from service.server.dashboard import serve_dashboard
    from service.server.token import ensure_token

    if parent_pid is not None:  # started by `liandan serve`: go when it goes
        from service.server.process import die_with_parent

        die_with_parent()
    settings = ensure_token(_settings(host=host, dashboard_port=port, storage=storage))
    url = settings.storage
    console.print(f"optuna-dashboard for {describe(url)} at http://{escape(host)}:{port}/ "
                  + ("(changes need the token: open /?token=... once)" if settings.loopback
                     else "(token required: open /?token=... once)"))
    try:
        serve_dashboard(host, port, url, reports_dir, settings.token_value() or "",
                        reads_open=settings.loopback, hosts=settings.served_hosts())
    except KeyboardInterrupt:
        pass


def _settings(**given):
    """The service's Settings (LIANDAN_* variables, these options on top); exit 2 naming
    what is refused."""
    from pydantic import ValidationError

    from service.server.api.settings import Settings

    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        for e in err.errors():
            where = ".".join(map(str, e["loc"]))
            console.print(f"[red]{escape(where + ': ' if where else '')}"
                          f"{escape(str(e.get('ctx', {}).get('error') or e['msg']))}[/red]")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="API interface [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="API port [default: 8000]")] = None,
    dashboard_port: Annotated[int | None, typer.Option(
        help="optuna-dashboard port [default: 8080]")] = None,
    no_dashboard: Annotated[bool, typer.Option(
        "--no-dashboard", help="do not start optuna-dashboard")] = False,
    storage: StorageOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="worker processes running studies [default: 1]; 0 = API only")] = None,
    ray_address: RayAddressOpt = None,
    reports_dir: Annotated[Path | None, typer.Option(
        "--reports-dir", help="where finished studies' reports go [default: reports]")] = None,
    allow_objective: Annotated[list[str] | None, typer.Option(
        "--allow-objective", metavar="MODULE",
        help="a module whose functions specs may name as objective (repeatable; pkg.* for a "
        "package, pkg.module:function for one function); replaces $LIANDAN_ALLOW_OBJECTIVES. "
        "Built-ins are always allowed")] = None,
) -> None:
    """The service: HTTP API, workers running queued studies on Ray, optuna-dashboard.

    Off loopback it refuses to start without $LIANDAN_TOKEN; on loopback without one it
    writes a random token to ./.liandan-token (mutating requests always need the token).
    Specs may name the built-in objectives and the functions of --allow-objective modules:
    an objective is code that runs with the workers' rights."""
    from service.server.serve import serve as run_service

    run_service(_settings(
        host=host, port=port, dashboard_port=dashboard_port, storage=storage, workers=workers,
        ray_address=ray_address, reports_dir=reports_dir,
        dashboard=False if no_dashboard else None,
        allow_objectives=tuple(allow_objective) if allow_objective else None))


@app.command()
def submit(
    spec_path: Annotated[Path, typer.Argument(help="study spec (YAML)", metavar="SPEC")],
    url: UrlOpt = None,
) -> None:
    """Submit a study spec to the service (`liandan serve`); prints where to watch it."""
    try:
        text = spec_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        console.print(f"[red]cannot read {escape(str(spec_path))}: {escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    created = api(lambda: client(url).submit(text))
    console.print(f"study [bold]{escape(created['name'])}[/bold]: {created['state']}")
    console.print(f"dashboard: {created['dashboard_url']}")
    console.print(f"report (when done): {created['report_url']}")


@app.command()
def cancel(
    study: Annotated[str, typer.Argument(help="study name")],
    url: UrlOpt = None,
) -> None:
    """Cancel a queued or running study in the service."""
    row = api(lambda: client(url).cancel(study))
    pending = " (stopping its trials)" if row["state"] == "running" else ""
    console.print(f"study [bold]{escape(row['name'])}[/bold]: {row['state']}{pending}")


@app.command()
def resume(
    study: Annotated[str, typer.Argument(help="study name")],
    url: UrlOpt = None,
) -> None:
    """Queue a cancelled or failed study in the service again: finished trials are kept,
    the rest of its budget runs."""
    row = api(lambda: client(url).resume(study))
    console.print(f"study [bold]{escape(row['name'])}[/bold]: {row['state']} "
                  f"({row['progress']['finished']}/{row['progress']['total']} trials done)")


OutOpt = Annotated[Path, typer.Option("--out", help="folder of the reports")]


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="study name (the spec's name)")],
    storage: StorageOpt = None,
    out: OutOpt = Path("reports"),
) -> None:
    """Write a study's report: markdown, findings JSON, plots, and a dashboard note."""
    from service.report.files import ReportNameError
    from service.rulebook.run import report_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        paths = report_study(_storage(storage), study, out)
    except (ReportNameError, LookupError) as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    console.print(f"report: {paths.markdown}")
    console.print(f"findings: {paths.json}")
    console.print(f"plots: {paths.plot_dir} ({len(paths.plots)})")
    if paths.noted:
        console.print(f"dashboard note saved on {len(paths.noted)} study(ies)")
    for warning in paths.warnings:
        console.print(f"[yellow]{escape(warning)}[/yellow]")


@app.command()
def rulebook(
    objective: Annotated[str, typer.Option(
        help="built-in name or package.module:function")] = "digits_cnn",
    budget: Annotated[str, typer.Option(
        help="small, medium (seeds added in stages to undecided rules) or full")] = "small",
    rules: Annotated[str | None, typer.Option(
        help="comma-separated rule IDs, e.g. R1,R8 (default: all)")] = None,
    out: OutOpt = Path("reports"),
    storage: StorageOpt = None,
    ray_address: RayAddressOpt = None,
    progress: Annotated[bool, typer.Option(help="show each study's progress bar")] = False,
    max_wall_s: Annotated[float | None, typer.Option(
        help="no new look of seeds starts that would end past this (default: the budget's)"
    )] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Run every rule's study on one objective and write one combined report."""
    from service.rulebook.run import run_rulebook

    if dry_run:
        dry_run_rulebook(objective, budget, rules, _storage(storage), ray_address)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = run_rulebook(
            objective, budget, rules.split(",") if rules else None, out, _storage(storage),
            ray_address, show_progress=progress, console=console, max_wall_s=max_wall_s)
    except ValueError as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"rulebook on {escape(objective)} ({budget})")
    for column in ("rule", "verdict", "effect", "p (Holm)", "evidence"):
        table.add_column(column, overflow="fold")
    for f in result.findings:
        table.add_row(f.rule, f.verdict, fmt(f.effect), fmt(f.p_adjusted), escape(f.evidence))
    console.print(table)
    console.print(f"wall time {result.wall_s:.1f} s")
    console.print(f"report: {result.paths.markdown}")
    console.print(f"findings: {result.paths.json}")
