"""What the command line prints beside its commands: status tables, the service's
answers, dry-run plans and end-of-study notifications."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["api", "api_status", "client", "cluster_of", "console", "dry_run_rulebook",
           "dry_run_study", "fmt", "notify_end", "status_table", "table_console"]

console = Console()


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def status_table(statuses) -> Table:
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
                f"{arm.seed_mean:.4g}±{fmt(arm.seed_sd)} n={len(arm.seed_values)}")
            params = "" if best is None else " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best.params.items() if k in st.searched)
            running = f" · {c['RUNNING']} running" if c["RUNNING"] else ""
            table.add_row(
                escape(st.name + (f" [{arm.arm}]" if arm.arm else "")),
                f"{c['COMPLETE']}/{c['PRUNED']}/{c['FAIL']} · {c['diverged']}{running}",
                fmt(None if best is None else best.value), seeds, params)
    return table


def notify_end(spec, url: str, state: str, **outcome) -> None:
    """POST the study's end to its `notify.webhook` (service.run.notify): after the study, so
    it never holds one up, and bounded (3 tries); an undelivered one is said, not fatal."""
    if not spec.notify.webhook:
        return
    from service.run.notify import notify, redacted, study_outcome

    for sent in notify([spec.notify.webhook], study_outcome(url, spec.name, state, **outcome)):
        if sent.ok:
            console.print(f"notified {escape(redacted(sent.url))} ({state})")
        else:
            console.print(f"[yellow]notification to {escape(redacted(sent.url))} not "
                          f"delivered after {sent.tries} tries: {escape(sent.error or '')}"
                          "[/yellow]")


def cluster_of(ray_address: str | None):
    """The cluster a dry run prices against: this machine, or the Ray cluster's nodes."""
    from service.run.cost import local_cluster, ray_cluster

    if not ray_address:
        return local_cluster()
    try:
        return ray_cluster(ray_address)
    except Exception as err:  # noqa: BLE001 - any failure to join is "cannot reach it"
        console.print(f"[red]cannot read the Ray cluster at {escape(ray_address)}: "
                      f"{escape(f'{type(err).__name__}: {err}')}[/red]")
        raise typer.Exit(2) from None


def dry_run_study(spec, url: str, ray_address: str | None) -> None:
    """`run --dry-run`: the spec is valid; its plan, resources and cost. Starts nothing."""
    from service.plan import make_plan
    from service.run.cost import cost_lines, estimate, study_cost

    cluster = cluster_of(ray_address)
    out = table_console()  # piped: whole lines, as a program reading them wants
    cost = estimate(study_cost(make_plan(spec), cluster), url, cluster)
    out.print(f"dry run of study [bold]{escape(spec.name)}[/bold] · objective "
                  f"{escape(spec.objective)}: the spec is valid; nothing started, nothing "
                  "written")
    out.print(f"cluster: {escape(cluster.describe())}")
    for line in cost_lines(cost):
        out.print(line, markup=False)


def table_console() -> Console:
    """The console for tables: on a terminal, its width; piped (to grep, a file, a program),
    one row per line, never wrapped at rich's 80-column default for non-terminals."""
    return console if console.is_terminal else Console(width=100_000)


def client(url: str | None):
    from service.client import DEFAULT_URL, ApiClient
    from service.server.token import find_token

    return ApiClient(url or DEFAULT_URL, find_token())


def api(call, where: str = "the service"):
    """`call()` against the API; a refusal or an unreachable service exits 2 with the reason."""
    from service.client import ApiError

    try:
        return call()
    except ApiError as err:
        api_error(err)
    except OSError as err:
        console.print(f"[red]cannot reach {escape(where)}: {escape(str(err))}[/red]")
        raise typer.Exit(2) from None


def api_error(err) -> None:
    if err.status == 422 and isinstance(err.detail, list):
        console.print(f"[red]invalid spec[/red] ({len(err.detail)} problems):")
        for p in err.detail:
            console.print(f"{p.get('path')}: {p.get('message')} (got {p.get('value')!r}; "
                          f"allowed: {p.get('allowed')})", markup=False)
    else:
        console.print(f"[red]HTTP {err.status}: {escape(str(err.detail))}[/red]")
    raise typer.Exit(2)


def api_status(url: str, study: str | None) -> None:
    rows = api(lambda: [client(url).study(study)] if study else client(url).studies(), url)
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
            fmt(row["best_value"]), row["updated"][:19])
    out = table_console()
    out.print(table)
    if study:
        row = rows[0]
        if row.get("best_trial"):
            out.print(f"best trial: {row['best_trial']}", markup=False)
        if row.get("error"):
            out.print(f"[yellow]{escape(row['error'])}[/yellow]")
        out.print(f"dashboard: {row['dashboard_url']}  report: {row['report_url']}")


def dry_run_rulebook(objective: str, budget: str, rules: str | None, url: str,
                      ray_address: str | None) -> None:
    """`rulebook --dry-run`: every rule study's plan and cost. Starts nothing."""
    from service.rulebook.dry_run import plan_rulebook
    from service.run.cost import cost_lines, total_lines

    cluster = cluster_of(ray_address)
    try:
        plan = plan_rulebook(objective, budget, rules.split(",") if rules else None, url,
                             cluster)
    except ValueError as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    out = table_console()
    out.print(f"dry run of the rulebook on {escape(objective)} ({budget}): nothing "
                  "started, nothing written")
    out.print(f"cluster: {escape(cluster.describe())}")
    for rule, why in plan.not_tested.items():
        out.print(f"{rule}: not tested ({why})", markup=False)
    for label, costs in plan.looks.items():
        if label:
            out.print(f"[bold]{escape(label)}[/bold]")
        said: set[str] = set()  # a note every study shares ("no time estimate") once
        for cost in costs:
            for line in cost_lines(cost):
                if line not in said:
                    out.print(line, markup=False)
                said.update([line] if line.startswith("  note:") else [])
        for line in total_lines(costs):
            out.print(line, markup=False)
    for note in plan.notes:
        out.print(f"note: {note}", markup=False)
