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
from service.storage import default_storage_url, describe

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
) -> None:
    """Run a study in-process on Ray and record it in the Optuna storage."""
    from service.runner import StudyConflict, run_study
    from service.status import study_statuses

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
    except StudyConflict as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    if result.started == 0:
        console.print("nothing to run: every trial of this study is already recorded")
    console.print(_status_table(study_statuses(url, spec.name)))
    console.print(f"wall time {result.wall_s:.1f} s")
    console.print(f"results: {describe(url)} (study {spec.name!r})")
    console.print(f"dashboard: liandan dashboard --storage '{url}'  → "
                  f"http://127.0.0.1:{DASHBOARD_PORT}/")


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="study name (default: all)")] = None,
    storage: StorageOpt = None,
) -> None:
    """Trial counts, best trials and seed re-runs of the studies in the storage."""
    from service.status import study_statuses

    statuses = study_statuses(_storage(storage), study)
    if not statuses:
        console.print(f"no study {study!r}" if study else "no studies yet")
        raise typer.Exit(1 if study else 0)
    console.print(_status_table(statuses))


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = DASHBOARD_PORT,
) -> None:
    """Serve optuna-dashboard on the same storage."""
    import optuna_dashboard

    from service.storage import open_storage

    url = _storage(storage)
    console.print(f"optuna-dashboard for {describe(url)} at http://{host}:{port}/")
    optuna_dashboard.run_server(open_storage(url), host=host, port=port)


OutOpt = Annotated[Path, typer.Option("--out", help="folder of the reports")]


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="study name (the spec's name)")],
    storage: StorageOpt = None,
    out: OutOpt = Path("reports"),
) -> None:
    """Write a study's report: markdown, findings JSON, plots, and a dashboard note."""
    from service.report import ReportNameError
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
