"""Only `service/store/` touches Optuna's private API or runs SQL on Optuna's tables (README,
"Architecture"): one adapter (`service.store.optuna_adapter`) to re-check at each Optuna
upgrade. This test reads every other module of the service, and the objectives, and fails
on:

- an import from a private Optuna module (`optuna.storages._rdb`) or of a private name
  (`from optuna.storages import _CachedStorage`);
- a private attribute of an Optuna object (`study._storage`, `trial._trial_id`,
  `storage._backend`, ...; `getattr(x, "_backend")` too). The names are read from this
  Optuna's classes and objects, so an upgrade that adds one is covered; `self._x` and
  `cls._x` are the module's own;
- SQL naming one of Optuna's tables in a string (docstrings are prose and left alone).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "service" / "store"
CHECKED = sorted(p for folder in ("service", "objectives") for p in (ROOT / folder).rglob("*.py")
                 if not p.is_relative_to(STORE))

OPTUNA_TABLES = (
    "studies", "trials", "trial_values", "trial_params", "trial_intermediate_values",
    "trial_user_attributes", "trial_system_attributes", "study_user_attributes",
    "study_system_attributes", "study_directions", "version_info", "alembic_version",
)
_TABLE = "|".join(OPTUNA_TABLES)
# A table named after an SQL keyword (FROM trials, JOIN studies, ...), or a statement that
# starts like SQL and names one anywhere. Case-sensitive keywords keep English prose out
# ("read from trials"); a statement written in lower case starts with its verb.
SQL = re.compile(rf"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+\"?({_TABLE})\b\"?")
SQL_START = re.compile(r"^\s*(select|insert|update|delete|with)\b", re.IGNORECASE)
TABLE_WORD = re.compile(rf"\b({_TABLE})\b")


def optuna_private_names() -> frozenset[str]:
    """The `_`-prefixed (not dunder) attributes of Optuna's study, trial and storage
    classes and of live objects of them (instance attributes such as `_study_id` exist only
    on an object)."""
    import optuna
    from optuna.storages import InMemoryStorage, RDBStorage
    from optuna.study import StudySummary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage="sqlite:///:memory:")
    trial = study.ask()
    study.tell(trial, 1.0)
    cached = study._storage  # noqa: SLF001 - the test of the rule reads what it forbids
    objects = [study, trial, study.trials[0], cached, cached._backend, InMemoryStorage(),
               cached.get_all_studies()[0], optuna.Study, optuna.Trial,
               optuna.trial.FrozenTrial, RDBStorage, type(cached), StudySummary]
    names = {"_storage", "_study_id", "_trial_id", "_backend"}  # whatever this Optuna has
    for obj in objects:
        names.update(n for n in [*dir(obj), *getattr(obj, "__dict__", {})]
                     if n.startswith("_") and not n.startswith("__"))
    return frozenset(names)


PRIVATE = optuna_private_names()


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _is_sql(text: str) -> bool:
    return bool(SQL.search(text) or (SQL_START.match(text) and TABLE_WORD.search(text)))


def violations(source: str) -> list[str]:
    """Each reach into Optuna's private API or its tables in `source`, as 'line N: what'."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "optuna"
                      and any(part.startswith("_") for part in a.name.split("."))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "optuna":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"line {line}: from {node.module} import ...")
            found += [f"line {line}: from {node.module} import {a.name}" for a in node.names
                      if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append(f"line {line}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE:
            found.append(f"line {line}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docs and _is_sql(node.value):
            found.append(f"line {line}: SQL on Optuna's tables: {node.value.strip()[:60]!r}")
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_store_reaches_into_optuna(path):
    found = violations(path.read_text(encoding="utf-8"))
    assert not found, ("Optuna's private API and tables belong to service/store/ "
                       "(use service.store.optuna_adapter): " + "; ".join(found))


PLANTED = '''
import optuna.storages._rdb.models
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages import _CachedStorage as Cached
import sqlalchemy as sa

def reach(study, trial, storage):
    sid = study._study_id
    storage = study._storage
    tid = trial._trial_id
    backend = getattr(storage, "_backend", storage)
    q = sa.text("SELECT 1 FROM study_user_attributes WHERE key = 'spec_name'")
    q2 = "select count(*) from trials"
    q3 = "UPDATE trials SET state = 'FAIL'"
    return conn.execute(sa.text('SELECT * FROM "studies"'))
'''


def test_the_rule_sees_planted_violations():
    found = violations(PLANTED)
    lines = sorted({int(f.split(":")[0].split()[1]) for f in found})
    assert lines == [2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15], found
    assert [f for f in found if f.startswith("line 8:")] == ["line 8: ._study_id"]
    assert sum("SQL" in f for f in found) == 4


def test_the_rule_leaves_clean_code_alone():
    clean = '''
"""Reads from trials and studies; the trials table is Optuna's."""
import optuna
from optuna.trial import TrialState
from service.store.optuna_adapter import study_id_of

class Mine:
    """Selects from trials of every study."""
    def __init__(self):
        self._storage = None          # its own attribute
        self._ot_study = None         # Ray's OptunaSearch's, not Optuna's

    def f(self, study):
        print("dropped 3 trials from studies", self._storage)
        return study_id_of(study), "select a study", TrialState.COMPLETE
'''
    assert violations(clean) == []


def test_the_names_cover_optunas_study_and_trial_ids():
    assert {"_storage", "_study_id", "_trial_id", "_backend"} <= PRIVATE
