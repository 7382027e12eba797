"""One contract suite over every registered rule check (as Optuna runs one suite over every
sampler): on planted studies built in memory (tests/fixtures/planted_studies.py), each check
reads as its protocol, returns the ◆ findings fields, draws its plots, says not_tested for a
study that did not run or an objective that lacks its parameters, and never crashes on an
empty study."""

from __future__ import annotations

import json

import pytest
from planted_studies import every_study

from service.rulebook import finalize, registry
from service.rulebook.run import _plan
from service.store.study_data import ArmData, StudyData

CHECKS = registry.all_checks()
FINDING_KEYS = {"rule", "claim", "verdict", "metric", "effect", "ci", "p_value", "p_adjusted",
                "n", "method", "evidence", "decision", "parts"}
PART_KEYS = {"claim", "test", "effect", "ci", "p", "p_adjusted", "verdict"}
DECISION_KEYS = {"test", "part", "p", "p_adjusted", "alpha", "margin"}


@pytest.fixture(scope="module")
def studies() -> dict[str, StudyData | None]:
    return every_study()


@pytest.fixture(scope="module")
def findings(studies, tmp_path_factory) -> dict:
    plot_dir = tmp_path_factory.mktemp("reports") / "contract"
    found = [check.check({s: studies[s] for s in check.specs}, plot_dir)
             for check in CHECKS.values()]
    return {"findings": {f.rule: f for f in finalize(found)}, "plot_dir": plot_dir}


def test_every_rule_has_a_registered_check():
    assert list(CHECKS) == [f"R{i}" for i in range(1, 15)]


@pytest.mark.parametrize("rule", list(CHECKS))
def test_each_check_returns_the_findings_fields(rule, findings):
    f = findings["findings"][rule]
    payload = json.loads(json.dumps(f.to_json()))  # JSON-ready
    assert FINDING_KEYS <= set(payload), rule
    assert payload["verdict"] in ("supported", "contradicted", "inconclusive")
    assert f.parts and f.evidence and f.protocol and f.table, rule
    for part in payload["parts"]:
        assert set(part) == PART_KEYS
    if payload["verdict"] in ("supported", "contradicted"):
        d = payload["decision"]
        assert set(d) == DECISION_KEYS and d["p_adjusted"] <= d["alpha"]
        assert d["p_adjusted"] == payload["p_adjusted"]
    else:
        assert payload["decision"] is None and f.more_needed
    assert f.method and f.studies


@pytest.mark.parametrize("rule", list(CHECKS))
def test_each_check_draws_its_plots(rule, findings):
    f, plot_dir = findings["findings"][rule], findings["plot_dir"]
    assert f.plots, rule
    for plot in f.plots:
        path = plot_dir.parent / plot
        assert path.is_file() and path.stat().st_size > 1024, plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("rule", list(CHECKS))
def test_a_study_that_did_not_run_is_not_tested(rule, tmp_path):
    check = CHECKS[rule]
    (f,) = finalize([check.check({s: None for s in check.specs}, tmp_path)])
    assert f.verdict == "not_tested" and "did not run" in f.evidence
    assert f.to_json()["decision"] is None and not f.plots


@pytest.mark.parametrize("rule", list(CHECKS))
def test_an_objective_lacking_its_parameters_is_not_tested(rule):
    check = CHECKS[rule]
    honoured = frozenset({"seed", "epochs"})  # none of the rules' scientific parameters
    not_tested, stems = _plan([rule], CHECKS, "toy:objective", honoured)
    assert not_tested[rule].verdict == "not_tested" and not stems
    assert "does not honour" in not_tested[rule].evidence
    assert all(p in not_tested[rule].evidence for p in sorted(set(check.needs) - honoured))


@pytest.mark.parametrize("rule", list(CHECKS))
def test_an_empty_study_is_inconclusive_or_not_tested(rule, studies, tmp_path):
    check = CHECKS[rule]
    empty = {}
    for stem in check.specs:
        data = studies[stem]
        empty[stem] = StudyData(data.name, data.spec, [
            ArmData(a.label, a.values, a.study_name, []) for a in data.arms])
    (f,) = finalize([check.check(empty, tmp_path)])
    assert f.verdict in ("inconclusive", "not_tested") and f.evidence, rule


def test_the_report_json_lists_search_space_warnings(findings):
    from service.rulebook.report import warnings_of

    for w in warnings_of(list(findings["findings"].values())):
        assert set(w) == {"study", "arm", "param", "edge", "best", "range"}
        assert w["edge"] in ("low", "high")
