"""Reports on studies built directly in SQLite (ask/tell with the liandan records): no Ray.

What a user and an outside check rely on: the markdown's structure, the ◆ findings JSON,
plots that are real PNGs, the dashboard note, and names that cannot leave the folder.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pytest
import yaml
from optuna.artifacts import FileSystemArtifactStore
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from service.report import notes
from service.report.files import ReportNameError, check_name
from service.report.study import write_study_report
from service.rulebook import Finding, RuleCheck, finalize, registry
from service.rulebook.decision import Hypothesis, Part
from service.rulebook.report import ReportContext, write_rulebook_report
from service.rulebook.run import report_study, rulebook_name, slug, study_name
from service.spec import validate_spec
from service.store.study_data import StudyData, load_study_data

optuna.logging.set_verbosity(optuna.logging.WARNING)

TOP_KEYS = {"study", "objective", "device", "created", "search_space_warnings", "findings"}
FINDING_KEYS = {"rule", "claim", "verdict", "metric", "effect", "ci", "p_value", "p_adjusted",
                "n", "method", "evidence", "decision", "parts"}
OPTIONAL_KEYS = {"undecided_because", "selection"}
VERDICTS = {"supported", "contradicted", "inconclusive", "not_tested"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ building studies
def make_study(url: str, name: str, *, scientific: dict[str, list[Any]] | None = None,
               trials: int = 8, seeds: int = 3, rules: list[str] | None = None,
               pruned: int = 0, diverged: int = 0, epochs: int = 4) -> None:
    """A finished liandan study: one Optuna study per arm with the ◆ trial records."""
    spec = validate_spec({
        "name": name, "objective": "digits_cnn", "rules": rules or [],
        "scientific": scientific or {},
        "nuisance": {"lr": {"low": 1e-3, "high": 1.0, "log": True}},
        "fixed": {"epochs": epochs, "decay": "cosine"},
        "budget": {"trials": trials, "seeds": seeds},
    }, check_objective=False)
    for arm_index, values in enumerate(spec.arms()):
        label = spec.arm_label(values)
        study = optuna.create_study(study_name=f"{name}[{label}]" if label else name,
                                    storage=url, direction="maximize")
        study.set_user_attr("spec", spec.model_dump(mode="json"))
        study.set_user_attr("spec_name", name)
        study.set_user_attr("arm", label or None)
        study.set_user_attr("arm_values", values)
        rng = random.Random(arm_index)
        base = {"lr": FloatDistribution(1e-3, 1.0, log=True),
                "epochs": CategoricalDistribution([epochs]),
                "decay": CategoricalDistribution(["cosine"]), **{
                    k: CategoricalDistribution([v]) for k, v in values.items()}}
        best_lr = None
        for i in range(trials + seeds):
            role = "seed" if i >= trials else "tune"
            seed = 1000 + i - trials if role == "seed" else 0
            space = {**base, "seed": IntDistribution(seed, seed)}
            if role == "seed":
                study.enqueue_trial({"lr": best_lr, "seed": seed})
            t = study.ask(space)
            t.set_user_attr("role", role)
            t.set_user_attr("device", "cpu")
            t.set_user_attr("node_id", "node0")
            if label:
                t.set_user_attr("arm", label)
            ceiling = 0.9 - abs(math.log10(t.params["lr"]) + 1.5) / 5 + 0.03 * arm_index
            last = epochs - 1 if i < pruned else epochs
            acc = 0.0
            for e in range(1, last + 1):
                acc = ceiling * (1 - 0.5**e) + rng.gauss(0, 0.005)
                t.report(acc, e)
            t.set_user_attr("val_accuracy", acc)
            is_div = role == "tune" and pruned <= i < pruned + diverged
            t.set_user_attr("diverged", is_div)
            if i < pruned:
                study.tell(t, state=TrialState.PRUNED)
                continue
            study.tell(t, acc)
            if role == "tune":
                best = study.best_trial
                best_lr = best.params["lr"]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 1024, path


def headings(markdown: str, level: int = 2) -> list[str]:
    return re.findall(rf"^{'#' * level} (.+)$", markdown, flags=re.M)


def assert_findings_json(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text())
    assert set(payload) == TOP_KEYS
    assert all(isinstance(payload[k], str)
               for k in TOP_KEYS - {"findings", "search_space_warnings"})
    for w in payload["search_space_warnings"]:
        assert set(w) == {"study", "arm", "param", "edge", "best", "range"}
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", payload["created"])
    for f in payload["findings"]:
        assert FINDING_KEYS <= set(f) <= FINDING_KEYS | OPTIONAL_KEYS
        assert f["verdict"] in VERDICTS
        for key in ("effect", "p_value", "p_adjusted"):
            assert f[key] is None or isinstance(f[key], float)
        assert f["ci"] is None or (len(f["ci"]) == 2 and all(isinstance(c, float | None)
                                                             for c in f["ci"]))
        assert isinstance(f["n"], list) and all(isinstance(n, int) for n in f["n"])
        for key in ("rule", "claim", "metric", "method", "evidence"):
            assert isinstance(f[key], str)
    return payload


# ------------------------------------------------------------------ study reports
def test_plain_search_report(sqlite_url, tmp_path):
    make_study(sqlite_url, "search", trials=12, seeds=0, pruned=2, diverged=1)
    out = tmp_path / "reports"
    paths = write_study_report(sqlite_url, "search", out)
    md = paths.markdown.read_text()
    assert paths.markdown == (out / "search.md").resolve()
    assert headings(md, 1) == ["Study report: search"]
    assert headings(md) == ["Trials", "Best trials (top 10 of 10 complete tuning trials)",
                            "Optimization history", "Learning curves of the best trials",
                            "Parameter importances", "Learning-rate schedule", "Reproduce"]
    trials_row = next(line for line in md.splitlines() if line.startswith("| search |"))
    assert trials_row.split(" | ")[1:5] == ["10", "2", "0", "0"]  # complete pruned fail running
    assert trials_row.split(" | ")[5] == "1"  # diverged
    assert "| lr |" in md and "PED-ANOVA" in md
    # Importances rest on all 12 trials at the epoch every one reached (2 were pruned at 3).
    assert "12 tuning trials (10 complete, the others pruned) compared at epoch 3" in md
    importance_row = next(line for line in md.splitlines() if line.startswith("| lr |"))
    low, high = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", importance_row).groups())
    assert 0 <= low <= high <= 1  # a bootstrap interval over trials
    payload = assert_findings_json(paths.json)
    assert payload["findings"] == [] and payload["study"] == "search"
    assert payload["device"] == "cpu" and payload["objective"] == "digits_cnn"
    assert {p.name for p in paths.plots} == {"history.png", "curves.png", "importances.png",
                                             "lr_schedule.png"}
    for p in paths.plots:
        assert_png(p)
        assert f"](search/{p.name})" in md  # linked relative to the report
    assert paths.noted == ["search"] and not paths.warnings


def test_reproduce_section_gives_a_spec_that_validates(sqlite_url, tmp_path):
    make_study(sqlite_url, "again", trials=4, seeds=2)
    md = write_study_report(sqlite_url, "again", tmp_path).markdown.read_text()
    reproduce = md.split("## Reproduce", 1)[1]
    spec_yaml = re.search(r"```yaml\n(.*?)```", reproduce, flags=re.S).group(1)
    assert validate_spec(yaml.safe_load(spec_yaml), check_objective=False).name == "again"
    assert re.search(r"code version: `([0-9a-f]{40}|unknown)", reproduce)
    for package in ("python", "torch", "optuna", "ray", "optuna-dashboard"):
        assert f"{package} " in reproduce
    assert "device: cpu" in reproduce
    assert "seeds: tuning 0; seed re-runs 1000, 1001" in reproduce
    assert f"liandan run again.yaml --storage {sqlite_url}" in reproduce
    assert f"liandan report again --storage {sqlite_url} --out {tmp_path}" in reproduce


def test_arm_report_has_per_arm_table_and_plots(sqlite_url, tmp_path):
    make_study(sqlite_url, "armed", scientific={"optimizer": ["adam", "momentum"]})
    paths = write_study_report(sqlite_url, "armed", tmp_path)
    md = paths.markdown.read_text()
    assert headings(md) == ["Trials", "Arms", "Isolation plot", "Learning curves",
                            "Learning-rate schedule", "Reproduce"]
    arms = md.split("## Arms", 1)[1].split("##", 1)[0]
    for label in ("optimizer=adam", "optimizer=momentum"):
        row = next(line for line in arms.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[3]) > 0 and cells[5] == "3"  # n seeds
    assert {p.name for p in paths.plots} == {"isolation.png", "curves.png", "lr_schedule.png"}
    for p in paths.plots:
        assert_png(p)
    assert sorted(paths.noted) == ["armed[optimizer=adam]", "armed[optimizer=momentum]"]
    assert assert_findings_json(paths.json)["findings"] == []


def test_importances_are_withheld_below_the_stated_minimum(sqlite_url, tmp_path):
    make_study(sqlite_url, "tiny", trials=6, seeds=0)
    md = write_study_report(sqlite_url, "tiny", tmp_path).markdown.read_text()
    assert ("Not computed: withheld: they would rest on 6 complete tuning trials, fewer than "
            "the 10 this report requires.") in md
    assert not (tmp_path / "tiny" / "importances.png").exists()


def test_counts_and_best_trials_count_the_same_trials(sqlite_url, tmp_path):
    # 8 tuning trials (1 pruned) and 2 seed re-runs: "complete" means 7 in both tables.
    make_study(sqlite_url, "counted", trials=8, seeds=2, pruned=1)
    md = write_study_report(sqlite_url, "counted", tmp_path).markdown.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| counted |"))
    assert row.split(" | ")[1:3] == ["7", "1"] and "| 2 | 10 |" in row  # seeds, total
    assert "## Best trials (top 7 of 7 complete tuning trials)" in md


def test_accuracies_on_a_finite_split_carry_their_binomial_interval():
    from service.report.uncertainty import accuracy_interval, split_size

    def trial(v: float) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=v, user_attrs={"val_accuracy": v})

    on_360 = [trial(k / 360) for k in (341, 352, 359, 360)]
    assert split_size(on_360, "val_accuracy")[0] == 360
    assert accuracy_interval(1.0, 360) == [0.9898, 1.0]  # 360/360 is not "1"
    low, high = accuracy_interval(359 / 360, 360)
    assert low < 0.99 < high  # 0.9972 and 1.0 are not told apart by 360 images
    rng = random.Random(0)
    assert split_size([trial(rng.uniform(0.8, 0.99)) for _ in range(6)],
                      "val_accuracy")[0] is None  # continuous values: no split to infer
    assert split_size([trial(0.5), trial(0.25)], "val_accuracy")[0] is None  # too few
    sized = optuna.trial.create_trial(value=0.9, user_attrs={"val_size": 1000})
    assert split_size([sized], "val_accuracy") == (1000, "`val_size` reported by the objective")


def test_dashboard_note_and_artifacts_are_saved_once(sqlite_url, tmp_path):
    make_study(sqlite_url, "noted", trials=10, seeds=0)
    for _ in range(2):  # a second report replaces the note and reuses the artifact IDs
        paths = write_study_report(sqlite_url, "noted", tmp_path)
    study = optuna.load_study(study_name="noted", storage=sqlite_url)
    note = optuna_dashboard.get_note(study)
    assert note.startswith("# Study report: noted") and "## Reproduce" in note
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    artifacts = [k for k in system_attrs if k.startswith("artifacts:")]
    assert len(artifacts) == len(paths.plots) == 4
    # The dashboard itself serves every image the note shows, given the artifact store.
    app = optuna_dashboard.wsgi(sqlite_url, artifact_store=FileSystemArtifactStore(
        str(tmp_path / "noted" / "artifacts")))
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", note)
    assert len(links) == 4
    for link in links:
        assert link.startswith(f"/artifacts/{study._study_id}/")
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"] = link
        response: dict[str, Any] = {}

        def start_response(status, headers, exc_info=None, response=response):
            response.update(status=status, headers=dict(headers))

        body = b"".join(app(environ, start_response))
        assert response["status"] == "200 OK"
        assert response["headers"]["Content-Type"] == "image/png"
        assert body[:8] == PNG_MAGIC and len(body) > 1024


def test_note_is_trimmed_at_a_section():
    markdown = "# t\n\n" + "".join(f"## s{i}\n\n{'x' * 1000}\n\n" for i in range(100))
    trimmed = notes.trim_note(markdown, full_path="r.md")
    assert len(trimmed) <= notes.NOTE_MAX_CHARS
    assert trimmed.rstrip().endswith("the full report is r.md.)*")
    assert "\n## s58\n" in trimmed and "## s59" not in trimmed


@pytest.mark.parametrize("name", ["../evil", "a/b", "Upper", "", "_x", "-x", ".hidden",
                                  "x" * 65, "a b", "..", "/abs"])
def test_unsafe_names_are_refused(name, sqlite_url, tmp_path):
    out = tmp_path / "reports"
    with pytest.raises(ReportNameError):
        write_study_report(sqlite_url, name, out)
    with pytest.raises(ReportNameError):
        write_rulebook_report([], ReportContext(objective="x"), out, name)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unknown_study_is_a_lookup_error(sqlite_url, tmp_path):
    with pytest.raises(LookupError):
        write_study_report(sqlite_url, "missing", tmp_path)


def test_rulebook_names():
    assert slug("planted_report:objective") == "planted-report-objective"
    assert slug("Pkg.Mod:Fn") == "pkg-mod-fn" and slug("__") == "objective"
    assert study_name("weight-decay", "digits_cnn") == "weight-decay-digits-cnn"
    assert rulebook_name("digits_cnn", "small") == "rulebook-digits-cnn-small"
    long_a, long_b = "a" * 80 + ":x", "a" * 80 + ":y"
    for name in (study_name("weight-decay", long_a), rulebook_name(long_a, "full")):
        assert check_name(name) and len(name) <= 64
    assert study_name("wd", long_a) != study_name("wd", long_b)


# ------------------------------------------------------------------ rulebook reports
class FakeCheck(RuleCheck):
    """Seed means of the second arm minus the first, with a plot: a check's shape."""

    claim = "the second arm is better"
    blog_zh = "正则化是提高泛化能力的最好方法"
    blog_en = "Regularization is the best way to improve generalization"
    literature = "Loshchilov & Hutter (arXiv:1711.05101) decouple weight decay."
    needs = ("lr",)

    def __init__(self, rule: str, specs: tuple[str, ...], effect: float, p: float):
        self.rule, self.specs, self.effect, self.p = rule, specs, effect, p

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        from service.report import plots

        data = studies[self.specs[0]]
        assert data is not None
        plot = plots.isolation_plot(data.arms, Path(plot_dir) / f"{self.rule}_iso.png",
                                    metric=data.metric, direction=data.direction)
        part = Part(self.claim, data.metric, "Welch t-test", self.effect,
                    (self.effect - 0.01, self.effect + 0.01), [3, 3],
                    [Hypothesis("support", "welch", self.p),
                     Hypothesis("against", "welch", 1 - self.p)])
        return Finding(
            rule=self.rule, claim=self.claim, parts=[part],
            method="Welch t-test", evidence=f"effect {self.effect}",
            protocol="weight decay on/off; lr tuned per arm",
            table=[{"arm": a.label, "n": len(a.seeds())} for a in data.arms],
            plots=[str(plot)], caveats=["a toy check"], more_needed="4 more seeds per arm")


def test_rulebook_report_structure_and_json(sqlite_url, tmp_path):
    make_study(sqlite_url, "wd-study", scientific={"weight_decay": [0.0, 0.0005]})
    data = load_study_data(sqlite_url, "wd-study")
    checks = {"R13": FakeCheck("R13", ("wd-study",), 0.05, 0.001),
              "R14": FakeCheck("R14", ("wd-study",), 0.001, 0.4)}
    findings = [checks[r].check({"wd-study": data}, tmp_path / "rb") for r in checks]
    findings.append(Finding(rule="R12", claim="BatchNorm helps", verdict="not_tested",
                            evidence="the objective does not honour batchnorm"))
    finalize(findings)
    assert [f.verdict for f in findings] == ["supported", "inconclusive", "not_tested"]
    context = ReportContext(objective="digits_cnn", studies={"wd-study": data}, checks=checks,
                            storage_url=sqlite_url, command="liandan rulebook --rules R13",
                            wall_s=12.5, budget="small")
    paths = write_rulebook_report(findings, context, tmp_path, "rb")
    md = paths.markdown.read_text()
    assert headings(md) == ["Verdicts", "R13", "R14", "R12", "Studies", "Reproduce"]
    verdicts = md.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    assert "| rule | claim | verdict | decided by | effect [95% CI] | p (Holm) |" in verdicts
    assert ("| [R13](#r13) | the second arm is better | **supported** | welch (p 0.001, Holm "
            "0.004) | 0.05 [0.04, 0.06] |") in md
    assert "one Holm family of m = 4 hypotheses" in verdicts
    r13 = md.split("## R13", 1)[1].split("\n## ", 1)[0]
    for text in (FakeCheck.blog_zh, FakeCheck.blog_en, "### Protocol", "### Evidence",
                 "### Plots", "### Verdict", "### Literature", "arXiv:1711.05101",
                 "### Caveats", "a toy check"):
        assert text in r13
    assert "### More needed" not in r13
    r14 = md.split("## R14", 1)[1].split("\n## ", 1)[0]
    assert "### More needed" in r14 and "4 more seeds per arm" in r14
    assert "the objective does not honour batchnorm" in md.split("## R12", 1)[1]
    assert "wall time of this command: 12.5 s" in md and "liandan rulebook --rules R13" in md
    for rule in ("R13", "R14"):
        assert f"](rb/{rule}_iso.png)" in md
        assert_png(tmp_path / "rb" / f"{rule}_iso.png")
    payload = assert_findings_json(paths.json)
    assert [f["rule"] for f in payload["findings"]] == ["R13", "R14", "R12"]
    assert payload["findings"][0] == {**findings[0].to_json()}
    assert payload["study"] == "rb"
    for name in ("wd-study[weight_decay=0.0]", "wd-study[weight_decay=0.0005]"):
        note = optuna_dashboard.get_note(optuna.load_study(study_name=name,
                                                           storage=sqlite_url))
        assert note.startswith("# Rulebook report: rb") and "/artifacts/" in note


def test_plots_outside_the_reports_folder_are_copied_in(sqlite_url, tmp_path):
    make_study(sqlite_url, "outside", scientific={"weight_decay": [0.0, 0.0005]}, trials=3)
    data = load_study_data(sqlite_url, "outside")
    elsewhere = tmp_path / "elsewhere"
    finding = FakeCheck("R13", ("outside",), 0.05, 0.001).check({"outside": data}, elsewhere)
    context = ReportContext(objective="digits_cnn", studies={"outside": data},
                            storage_url=sqlite_url)
    out = tmp_path / "reports"
    md = write_rulebook_report(finalize([finding]), context, out, "copied").markdown.read_text()
    assert "](copied/R13_iso.png)" in md
    assert_png(out / "copied" / "R13_iso.png")


def test_liandan_report_runs_the_rule_checks_a_spec_lists(sqlite_url, tmp_path, monkeypatch):
    make_study(sqlite_url, "wd", scientific={"weight_decay": [0.0, 0.0005]},
               rules=["R12", "R13", "R14"])
    needs_mixup = FakeCheck("R14", ("weight-decay",), 0.05, 0.001)
    needs_mixup.needs = ("mixup", "lr")  # not a parameter digits_cnn has
    monkeypatch.setattr(registry, "all_checks", lambda: {
        "R13": FakeCheck("R13", ("weight-decay",), 0.05, 0.001), "R14": needs_mixup})
    paths = report_study(sqlite_url, "wd", tmp_path)
    md = paths.markdown.read_text()
    assert headings(md)[:4] == ["Verdicts", "R12", "R13", "R14"]
    rules = assert_findings_json(paths.json)["findings"]
    assert [(f["rule"], f["verdict"]) for f in rules] == [
        ("R12", "not_tested"), ("R13", "supported"), ("R14", "not_tested")]
    assert rules[0]["evidence"] == "no check implemented"
    assert rules[2]["evidence"] == ("the objective digits_cnn does not honour mixup, which "
                                    "this rule needs")
    # Without any check for its rules, the same study gets the plain report.
    monkeypatch.setattr(registry, "all_checks", lambda: {})
    md = report_study(sqlite_url, "wd", tmp_path).markdown.read_text()
    assert md.startswith("# Study report: wd") and "## Arms" in md
