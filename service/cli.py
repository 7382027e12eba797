"""`liandan`: the command line (◆ contract in ARCHITECTURE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import optuna
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.spec import SpecError, load_spec
from service.store.storage import default_storage_url, describe

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="liandan (炼丹): hyperparameter studies on Optuna + Ray Tune.")
console = Console()

StorageOpt = Annotated[str | None, typer.Option(
    "--storage", help="Optuna storage URL (default: sqlite file liandan.db here, "
    "or $LIANDAN_STORAGE)")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="attach to an existing Ray cluster instead of starting one")]
DataRootOpt = Annotated[str | None, typer.Option(
    "--data-root", help="folder of torchvision data sets (default: $LIANDAN_DATA_ROOT)")]
DASHBOARD_PORT = 8080


def _storage(url: str | None) -> str:
    return url or default_storage_url()


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _status_table(statuses) -> Table:
    table = Table(title="studies")
    table.add_column("study [arm]")
    table.add_column("trials c/p/f · div")
    table.add_column("best (tune)")
    table.add_column("seeds mean±sd")
    table.add_column("best params", overflow="fold")
    for st in statuses:
        for arm in st.arms:
            c, best = arm.counts, arm.best
            seeds = "—" if arm.seed_mean is None else (
                f"{arm.seed_mean:.4g}±{_fmt(arm.seed_sd)} n={len(arm.seed_values)}")
            params = "" if best is None else " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best.params.items() if k in st.searched)
            running = f" · {c['RUNNING']} running" if c["RUNNING"] else ""
            table.add_row(
                escape(st.name + (f" [{arm.arm}]" if arm.arm else "")),
                f"{c['COMPLETE']}/{c['PRUNED']}/{c['FAIL']} · {c['diverged']}{running}",
                _fmt(None if best is None else best.value), seeds, params)
    return table


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(help="study spec (YAML)", metavar="SPEC")],
    storage: StorageOpt = None,
    ray_address: RayAddressOpt = None,
    data_root: DataRootOpt = None,
    progress: Annotated[bool, typer.Option(help="show the live progress bar")] = True,
    report: Annotated[bool, typer.Option(help="write the study's report at the end")] = True,
    out: Annotated[Path, typer.Option("--out", help="folder of the reports")] = Path("reports"),
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says it better
    console.print(f"study [bold]{escape(spec.name)}[/bold] · objective {spec.objective} · "
                  f"storage {describe(url)}")
    try:
        result = run_study(spec, url, ray_address=ray_address, show_progress=progress,
                           data_root=data_root, console=console)
    except (StudyConflict, Unschedulable) as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    except StudyFailed as err:  # every trial failed: nothing measured, no report to write
        console.print(f"[red]study {escape(spec.name)} failed: {escape(str(err))}[/red]")
        raise typer.Exit(1) from None
    if result.started == 0:
        console.print("nothing to run: every trial of this study is already recorded")
    console.print(_status_table(study_statuses(url, spec.name)))
    console.print(f"wall time {result.wall_s:.1f} s")
    console.print(f"results: {describe(url)} (study {spec.name!r})")
    if report:
        from service.rulebook.run import report_study

        paths = report_study(url, spec.name, out, command=f"liandan run {spec_path}")
        console.print(f"report: {paths.markdown} (findings {paths.json}, "
                      f"{len(paths.plots)} plots; also a note in the dashboard)")
    console.print(f"dashboard: liandan dashboard --storage '{url}'  → "
                  f"http://127.0.0.1:{DASHBOARD_PORT}/")


UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="the liandan API (`liandan serve`), e.g. http://127.0.0.1:8000; token from "
    "$LIANDAN_TOKEN or ./.liandan-token")]


def _table_console() -> Console:
    """The console for tables: on a terminal, its width; piped (to grep, a file, a program),
    one row per line, never wrapped at rich's 80-column default for non-terminals."""
    return console if console.is_terminal else Console(width=100_000)


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="study name (default: all)")] = None,
    storage: StorageOpt = None,
    url: UrlOpt = None,
) -> None:
    """Trial counts, best trials and seed re-runs of the studies in the storage (or, with
    --url, the service's view: queue state, progress, best trial)."""
    if url:
        _api_status(url, study)
        return
    from service.store.status import study_statuses

    statuses = study_statuses(_storage(storage), study)
    if not statuses:
        console.print(f"no study {study!r}" if study else "no studies yet")
        raise typer.Exit(1 if study else 0)
    _table_console().print(_status_table(statuses))


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


def _client(url: str | None):
    from service.client import DEFAULT_URL, ApiClient
    from service.server.token import find_token

    return ApiClient(url or DEFAULT_URL, find_token())


def _api(call, where: str = "the service"):
    """`call()` against the API; a refusal or an unreachable service exits 2 with the reason."""
    from service.client import ApiError

    try:
        return call()
    except ApiError as err:
        _api_error(err)
    except OSError as err:
        console.print(f"[red]cannot reach {escape(where)}: {escape(str(err))}[/red]")
        raise typer.Exit(2) from None


def _api_error(err) -> None:
    if err.status == 422 and isinstance(err.detail, list):
        console.print(f"[red]invalid spec[/red] ({len(err.detail)} problems):")
        for p in err.detail:
            console.print(f"{p.get('path')}: {p.get('message')} (got {p.get('value')!r}; "
                          f"allowed: {p.get('allowed')})", markup=False)
    else:
        console.print(f"[red]HTTP {err.status}: {escape(str(err.detail))}[/red]")
    raise typer.Exit(2)


def _api_status(url: str, study: str | None) -> None:
    rows = _api(lambda: [_client(url).study(study)] if study else _client(url).studies(), url)
    if not rows:
        console.print("no studies yet")
        return
    table = Table(title=f"studies at {escape(url)}")
    for column in ("study", "state", "trials c/p/f · running", "progress", "best", "updated"):
        table.add_column(column, overflow="fold")
    for row in rows:
        c = row["counts"]
        progress = row.get("progress")
        table.add_row(
            escape(row["name"]), row["state"] + (" (cancel requested)"
                                                 if row.get("cancel_requested") else ""),
            f"{c['complete']}/{c['pruned']}/{c['fail']} · {c['running']}",
            f"{progress['finished']}/{progress['total']}" if progress else "",
            _fmt(row["best_value"]), row["updated"][:19])
    out = _table_console()
    out.print(table)
    if study:
        row = rows[0]
        if row.get("best_trial"):
            out.print(f"best trial: {row['best_trial']}", markup=False)
        if row.get("error"):
            out.print(f"[yellow]{escape(row['error'])}[/yellow]")
        out.print(f"dashboard: {row['dashboard_url']}  report: {row['report_url']}")


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
    created = _api(lambda: _client(url).submit(text))
    console.print(f"study [bold]{escape(created['name'])}[/bold]: {created['state']}")
    console.print(f"dashboard: {created['dashboard_url']}")
    console.print(f"report (when done): {created['report_url']}")


@app.command()
def cancel(
    study: Annotated[str, typer.Argument(help="study name")],
    url: UrlOpt = None,
) -> None:
    """Cancel a queued or running study in the service."""
    row = _api(lambda: _client(url).cancel(study))
    pending = " (stopping its trials)" if row["state"] == "running" else ""
    console.print(f"study [bold]{escape(row['name'])}[/bold]: {row['state']}{pending}")


@app.command()
def resume(
    study: Annotated[str, typer.Argument(help="study name")],
    url: UrlOpt = None,
) -> None:
    """Queue a cancelled or failed study in the service again: finished trials are kept,
    the rest of its budget runs."""
    row = _api(lambda: _client(url).resume(study))
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
    budget: Annotated[str, typer.Option(help="small or full")] = "small",
    rules: Annotated[str | None, typer.Option(
        help="comma-separated rule IDs, e.g. R1,R8 (default: all)")] = None,
    out: OutOpt = Path("reports"),
    storage: StorageOpt = None,
    ray_address: RayAddressOpt = None,
    progress: Annotated[bool, typer.Option(help="show each study's progress bar")] = False,
) -> None:
    """Run every rule's study on one objective and write one combined report."""
    from service.rulebook.run import run_rulebook

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = run_rulebook(
            objective, budget, rules.split(",") if rules else None, out, _storage(storage),
            ray_address, show_progress=progress, console=console)
    except ValueError as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"rulebook on {escape(objective)} ({budget})")
    for column in ("rule", "verdict", "effect", "p (Holm)", "evidence"):
        table.add_column(column, overflow="fold")
    for f in result.findings:
        table.add_row(f.rule, f.verdict, _fmt(f.effect), _fmt(f.p_adjusted), escape(f.evidence))
    console.print(table)
    console.print(f"wall time {result.wall_s:.1f} s")
    console.print(f"report: {result.paths.markdown}")
    console.print(f"findings: {result.paths.json}")


if __name__ == "__main__":
    app()
