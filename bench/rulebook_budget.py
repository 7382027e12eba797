"""Rulebook budgets: trials planned and saved by sharing identical arms, the staged
procedure's simulated family-wise error, and (with --run) wall time and rules decided.

    .venv/bin/python bench/rulebook_budget.py                 # plan + simulation, seconds
    .venv/bin/python bench/rulebook_budget.py --run small     # a real rulebook run (minutes)

Writes bench/results/rulebook_budget.json (merged with what is there).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), *(str(ROOT / "tests" / d) for d in ("rulebook_tests", "fixtures"))]

from service.plan import make_plan  # noqa: E402
from service.rulebook.execute import spec_for  # noqa: E402
from service.rulebook.registry import all_checks  # noqa: E402
from service.rulebook.sharing import arm_key  # noqa: E402
from service.rulebook.staging import STAGES  # noqa: E402

OUT = ROOT / "bench" / "results" / "rulebook_budget.json"
SPECS = ROOT / "search_spaces" / "rulebook"


def planned(budget: str, objective: str = "digits_cnn") -> dict:
    """Trials per look if every study grew at every look, and how many sharing saves (the
    arms whose key an earlier study's arm already has). R10's evidence study is placed from
    its scan, so its arms are counted as written (two LRs x two warmups)."""
    stems: list[str] = []
    for check in all_checks().values():
        stems += [s for s in check.specs if s not in stems]
    stages = STAGES[budget]
    looks = []
    for factor in stages.factors:
        seen: set[str] = set()
        total = saved = 0
        for stem in stems:
            spec = spec_for(SPECS / budget / f"{stem}.yaml", objective, factor, [], {})
            plan = make_plan(spec)
            per_arm = plan.trials_per_arm + len(plan.seeds)
            for arm in plan.arms:
                total += per_arm
                key = arm_key(plan, arm)
                if key is not None and key in seen:
                    saved += per_arm
                elif key is not None:
                    seen.add(key)
        looks.append({"factor": factor, "trials_planned": total, "trials_saved_by_sharing":
                      saved})
    return {"looks": looks, "alphas": stages.alphas(0.05), "max_wall_s": stages.max_wall_s}


def simulated_fwer(draws: int = 2000) -> dict:
    import numpy as np
    from test_staging import _staged_report_errs  # the test's null worlds

    rng = np.random.default_rng(20261201)
    errs = sum(_staged_report_errs(rng, STAGES["medium"]) for _ in range(draws))
    rate = errs / draws
    return {"draws": draws, "rules": 10, "looks_seeds": [5, 10, 20], "fwer": rate,
            "mc_se": float(np.sqrt(rate * (1 - rate) / draws)), "alpha": 0.05}


def run(budget: str, rules: str | None) -> dict:
    from rich.console import Console

    from service.rulebook.run import run_rulebook

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_rulebook("digits_cnn", budget, rules.split(",") if rules else None,
                              Path(tmp) / "reports", f"sqlite:///{tmp}/bench.db",
                              console=Console(stderr=True))
        wall = time.perf_counter() - t0
    verdicts = {f.rule: f.verdict for f in result.findings}
    return {"wall_s": round(wall, 1), "looks": result.looks, "trials_shared": result.shared,
            "decided": sum(v in ("supported", "contradicted") for v in verdicts.values()),
            "verdicts": verdicts, "rules": rules or "all",
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", choices=list(STAGES), help="run the rulebook at this budget")
    ap.add_argument("--rules", help="only these rules (comma-separated) for --run")
    ap.add_argument("--draws", type=int, default=2000)
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results["planned"] = {b: planned(b) for b in ("small", "medium")}
    results["staged_fwer_simulation"] = simulated_fwer(args.draws)
    if args.run:
        results.setdefault("runs", {})[f"{args.run}:{args.rules or 'all'}"] = run(
            args.run, args.rules)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
