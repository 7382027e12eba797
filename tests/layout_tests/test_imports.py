"""The layout's import rules (README, "Architecture"): imports run one way, down the flow.

    cli, client ──► server ──► rulebook ──► report ──► store ──► spec, plan, records
                                   └──────► run ─────────┘

`store` imports no other stage, `report` never imports `rulebook` or `run`, `run` never
imports a report, and objectives know nothing of the service.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = {"spec", "plan", "records"}
ENTRY = {"cli", "client"}
# What each stage may import, besides itself and the contract modules.
ALLOWED = {
    "contract": set(),
    "store": set(),
    "run": {"store"},
    "report": {"store"},
    "rulebook": {"store", "report", "run"},
    "server": {"store", "report", "run", "rulebook"},
    "entry": {"store", "report", "run", "rulebook", "server", "entry"},
}


def stage(module: str) -> str:
    """`service.run.search` -> "run"; `service.spec` -> "contract"."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else ""
    if head in CONTRACT:
        return "contract"
    if head in ENTRY:
        return "entry"
    return head


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "service":  # `from service import x` imports service.x
                found += [(node.lineno, f"service.{a.name}") for a in node.names]
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SERVICE = sorted((ROOT / "service").rglob("*.py"))
OBJECTIVES = sorted((ROOT / "objectives").rglob("*.py"))


def test_every_service_module_belongs_to_a_known_stage():
    stages = {stage(module_name(p)) for p in SERVICE if module_name(p) != "service"}
    assert stages <= set(ALLOWED), stages - set(ALLOWED)


@pytest.mark.parametrize("path", SERVICE, ids=lambda p: str(p.relative_to(ROOT)))
def test_service_imports_run_down_the_flow(path):
    own = stage(module_name(path))
    if module_name(path) == "service":
        return
    allowed = ALLOWED[own] | {own, "contract"}
    wrong = [f"line {line}: {mod} ({stage(mod)})" for line, mod in imports(path)
             if mod.startswith("service.") and stage(mod) not in allowed]
    assert not wrong, f"{own} may import only {sorted(allowed)}"


@pytest.mark.parametrize("path", OBJECTIVES, ids=lambda p: str(p.relative_to(ROOT)))
def test_objectives_know_nothing_of_the_service_ray_or_optuna(path):
    wrong = [f"line {line}: {mod}" for line, mod in imports(path)
             if mod.split(".")[0] in ("service", "ray", "optuna")]
    assert not wrong


def test_the_rule_sees_a_wrong_import(tmp_path):
    """The check itself: an upward import is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from service.rulebook.report import effect_text\nimport service.run.runner\n")
    found = [stage(m) for _, m in imports(bad)]
    assert found == ["rulebook", "run"]
    assert not {"rulebook", "run"} <= ALLOWED["report"]
