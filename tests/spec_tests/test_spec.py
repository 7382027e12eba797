"""The study spec: models, defaults, and validation that names every problem in one pass."""

import json
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from service.spec import (
    Budget,
    Range,
    Resources,
    Search,
    SpecError,
    SpecProblem,
    StudySpec,
    load_spec,
    parse_spec,
    validate_spec,
)

FULL = """\
name: optimizer-generalization     # [a-z0-9][a-z0-9_-]{0,63}
objective: digits_cnn
rules: [R8]
metric: val_accuracy
direction: maximize
scientific:
  optimizer: [momentum, adam]
nuisance:
  lr: {low: 1e-4, high: 1.0, log: true}
  batch_size: [32, 64, 128]
fixed: {epochs: 15, decay: cosine}
budget: {trials: 24, seeds: 5, max_concurrent: 2}
search: {sampler: tpe, pruner: asha}
resources: {cpu: 1, gpu: 0}
"""


def spec_dict(**sections: Any) -> dict[str, Any]:
    """A minimal valid spec with some top-level sections replaced."""
    return {"name": "study", "objective": "digits_cnn", **sections}


def problems_of(data: Any) -> dict[str, SpecProblem]:
    with pytest.raises(SpecError) as info:
        validate_spec(data, check_objective=False)
    found = {p.path: p for p in info.value.problems}
    assert len(found) == len(info.value.problems), "one problem per path"
    return found


# ── valid specs ───────────────────────────────────────────────────────────────────────────


def test_full_spec_parses_and_round_trips() -> None:
    spec = parse_spec(FULL, check_objective=False)
    assert spec.name == "optimizer-generalization" and spec.rules == ["R8"]
    assert spec.scientific == {"optimizer": ["momentum", "adam"]}
    assert spec.nuisance["lr"] == Range(low=1e-4, high=1.0, log=True, type="float")
    assert spec.nuisance["batch_size"] == [32, 64, 128]
    assert spec.fixed == {"epochs": 15, "decay": "cosine"}
    assert spec.budget == Budget(trials=24, seeds=5, max_concurrent=2)
    assert spec.resources == Resources(cpu=1, gpu=0)
    assert parse_spec(yaml.safe_dump(spec.model_dump()), check_objective=False) == spec
    assert validate_spec(json.loads(spec.model_dump_json()), check_objective=False) == spec


def test_defaults() -> None:
    spec = validate_spec(spec_dict(), check_objective=False)
    assert (spec.rules, spec.metric, spec.direction) == ([], "val_accuracy", "maximize")
    assert spec.scientific == spec.nuisance == spec.fixed == {}
    assert spec.budget == Budget(trials=20, seeds=0, max_concurrent=2)
    assert spec.search == Search(sampler="tpe", pruner="asha", seed=None)
    assert spec.resources == Resources(cpu=1.0, gpu=0.0)
    assert spec.arms() == [{}] and spec.arm_label({}) == "" and spec.parameters() == set()


def test_scalars_keep_their_types_and_yaml_exponents_are_floats() -> None:
    text = "name: s\nobjective: o\nfixed: {flag: true, n: 32, x: 0.5, s: '32', e: 1e-4, f: 2E+3}"
    fixed = parse_spec(text, check_objective=False).fixed
    assert fixed == {"flag": True, "n": 32, "x": 0.5, "s": "32", "e": 1e-4, "f": 2000.0}
    assert [type(v) for v in fixed.values()] == [bool, int, float, str, float, float]


@pytest.mark.parametrize(
    ("name", "domain", "kind"),
    [
        ("lr", {"low": 1e-4, "high": 1.0}, "float"),
        ("batch_size", {"low": 16, "high": 256}, "int"),
        ("epochs", {"low": 1, "high": 20}, "int"),
        ("seed", {"low": 0, "high": 9}, "int"),
        ("width", {"low": 8, "high": 64}, "float"),
        ("width", {"low": 8, "high": 64, "type": "int"}, "int"),
        ("epochs", {"low": 1, "high": 20, "type": "int"}, "int"),
    ],
)
def test_range_kind_is_resolved_from_the_name(name: str, domain: dict, kind: str) -> None:
    spec = validate_spec(spec_dict(nuisance={name: domain}), check_objective=False)
    assert spec.nuisance[name].kind == kind and spec.nuisance[name].type == kind


def test_arms_are_the_cartesian_product_in_spec_order() -> None:
    spec = validate_spec(
        spec_dict(scientific={"optimizer": ["momentum", "adam"], "batchnorm": [True, False]},
                  nuisance={"lr": [0.1, 0.01]}, fixed={"epochs": 3}),
        check_objective=False,
    )
    assert spec.arms() == [
        {"optimizer": o, "batchnorm": b} for o in ("momentum", "adam") for b in (True, False)
    ]
    assert [spec.arm_label(arm) for arm in spec.arms()] == [
        "optimizer=momentum,batchnorm=true", "optimizer=momentum,batchnorm=false",
        "optimizer=adam,batchnorm=true", "optimizer=adam,batchnorm=false",
    ]
    assert spec.parameters() == {"optimizer", "batchnorm", "lr", "epochs"}


@pytest.mark.parametrize(
    "sections",
    [
        {"name": "a"}, {"name": "a" * 64}, {"name": "0-study_x"},
        {"resources": {"cpu": 0.5, "gpu": 0.25}}, {"resources": {"gpu": 2}},
        {"fixed": {"width": -5, "mode": "anything"}},  # user parameters take any value
        {"fixed": {"epochs": 10, "warmup_epochs": 9.5}},
        {"metric": "val_loss", "direction": "minimize"}, {"metric": "f1", "direction": "minimize"},
        {"nuisance": {"x": {"low": 0.1, "high": 0.5, "step": 0.1}}, "search": {"sampler": "grid"}},
        {"nuisance": {"batch_size": {"low": 16, "high": 64, "step": 16}, "decay": ["cosine"]}},
        {"scientific": {"x": [1, True]}},  # True and 1 are different arms
        {"rules": ["R1", "R14"]},
    ],
)
def test_valid_variants(sections: dict[str, Any]) -> None:
    validate_spec(spec_dict(**sections), check_objective=False)


def test_quickstart_spec_is_valid() -> None:
    path = Path(__file__).parents[2] / "search_spaces" / "quickstart.yaml"
    if not path.exists():
        pytest.skip("no quickstart spec in this checkout")
    assert load_spec(path, check_objective=False).name == "quickstart"


# ── rejected specs: every problem, each at its path ───────────────────────────────────────


def test_six_mistakes_give_six_problems() -> None:
    data = spec_dict(
        name="Bad Name",
        direction="sideways",
        nuisance={"lr": {"low": 1.0, "high": 0.1}, "momentum": 0.9},
        budget={"trials": -3},
        search={"sampler": "tpe", "prunr": "asha"},
    )
    found = problems_of(data)
    assert set(found) == {"name", "direction", "nuisance.lr.low", "nuisance.momentum",
                          "budget.trials", "search.prunr"}
    assert found["name"].value == "Bad Name"
    assert found["direction"].allowed == "one of 'maximize' or 'minimize'"
    assert found["nuisance.lr.low"].value == 1.0
    assert found["nuisance.lr.low"].allowed == "a number below high (0.1)"
    assert "use fixed:" in found["nuisance.momentum"].message
    assert found["budget.trials"].value == -3 and "1 to 100000" in found["budget.trials"].allowed
    assert found["search.prunr"].allowed == "keys sampler, pruner, seed"
    assert "did you mean 'pruner'" in found["search.prunr"].message


@pytest.mark.parametrize(
    ("sections", "paths"),
    [
        # name
        *[({"name": bad}, {"name"}) for bad in
          ["Bad", "a/b", "../x", "a b", "a" * 65, "-a", "", "abc\n", 12]],
        ({"name": None, "objective": ""}, {"name", "objective"}),
        # rules
        ({"rules": ["R0", "R15", "r1", "R8", "R8"]}, {"rules[0]", "rules[1]", "rules[2]",
                                                       "rules[4]"}),
        ({"rules": "R8"}, {"rules"}),
        # ranges
        ({"nuisance": {"x": {"low": 2, "high": 1}}}, {"nuisance.x.low"}),
        ({"nuisance": {"x": {"low": 1, "high": 1}}}, {"nuisance.x.low"}),
        ({"nuisance": {"x": {"low": 0, "high": 1, "log": True}}}, {"nuisance.x.low"}),
        ({"nuisance": {"x": {"low": 0, "high": 1, "step": 0}}}, {"nuisance.x.step"}),
        ({"nuisance": {"x": {"low": 0, "high": 1, "step": -0.5}}}, {"nuisance.x.step"}),
        ({"nuisance": {"x": {"low": 0, "high": 1, "step": 0.3}}}, {"nuisance.x.step"}),
        ({"nuisance": {"x": {"low": 1, "high": 8, "log": True, "step": 1}}}, {"nuisance.x.step"}),
        ({"nuisance": {"x": {"low": 0.5, "high": 8.5, "type": "int"}}},
         {"nuisance.x.low", "nuisance.x.high"}),
        ({"nuisance": {"x": {"low": 1, "high": 9, "step": 0.5, "type": "int"}}},
         {"nuisance.x.step"}),
        ({"nuisance": {"x": {"low": True, "high": "9", "log": "yes", "type": "str"}}},
         {"nuisance.x.low", "nuisance.x.high", "nuisance.x.log", "nuisance.x.type"}),
        ({"nuisance": {"x": {"high": 1}}}, {"nuisance.x.low"}),
        ({"nuisance": {"x": {"low": float("nan"), "high": 1}}}, {"nuisance.x.low"}),
        # lists
        ({"nuisance": {"x": []}}, {"nuisance.x"}),
        ({"nuisance": {"x": [1, 2, 1, 1.0]}}, {"nuisance.x[2]", "nuisance.x[3]"}),
        ({"nuisance": {"x": [1, None, [2]]}}, {"nuisance.x[1]", "nuisance.x[2]"}),
        ({"scientific": {"x": [1]}}, {"scientific.x"}),
        ({"scientific": {"x": []}}, {"scientific.x"}),
        ({"scientific": {"x": [1, 2, 2]}}, {"scientific.x[2]"}),
        ({"scientific": {"x": "a"}}, {"scientific.x"}),
        # sections
        ({"nuisance": {"lr": 0.1}}, {"nuisance.lr"}),
        ({"nuisance": {"lr": [0.1, 0.2]}, "fixed": {"lr": 0.1}}, {"fixed.lr"}),
        ({"scientific": {"lr": [0.1, 0.2]}, "nuisance": {"lr": [0.3]}, "fixed": {"lr": 0.1}},
         {"nuisance.lr", "fixed.lr"}),
        ({"fixed": {"x": [1, 2]}}, {"fixed.x"}),
        ({"fixed": {"x": None}}, {"fixed.x"}),
        ({"fixed": {3: 1}}, {"fixed.3"}),
        ({"nuisance": {3: [True]}, "budget": {5: 1}}, {"nuisance.3", "budget.5"}),
        ({"scientific": [1, 2], "nuisance": 5, "fixed": "a"}, {"scientific", "nuisance", "fixed"}),
        # budget and resources
        *[({"budget": {key: bad}}, {f"budget.{key}"}) for key, bad in [
            ("trials", 0), ("trials", 100_001), ("trials", True), ("trials", 2.5), ("trials", "5"),
            ("seeds", -1), ("seeds", 1001), ("max_concurrent", 0), ("max_concurrent", 1025)]],
        ({"budget": 5}, {"budget"}),
        *[({"resources": {key: bad}}, {f"resources.{key}"}) for key, bad in [
            ("cpu", 0), ("cpu", -1), ("cpu", 1025), ("cpu", True), ("gpu", -0.5), ("gpu", 1.5)]],
        ({"search": {"sampler": "bayes", "pruner": "sometimes", "seed": 1.5}},
         {"search.sampler", "search.pruner", "search.seed"}),
        # unknown keys
        ({"extra": 1, "budgets": {}}, {"extra", "budgets"}),
        ({"nuisance": {"lr": {"low": 0.1, "high": 1, "logarithmic": True}}},
         {"nuisance.lr.logarithmic"}),
        ({"resources": {"memory": 4}}, {"resources.memory"}),
    ],
)
def test_rejected(sections: dict[str, Any], paths: set[str]) -> None:
    assert set(problems_of(spec_dict(**sections))) == paths


@pytest.mark.parametrize(
    ("sections", "paths"),
    [
        ({"fixed": {"optimizer": "adamx"}}, {"fixed.optimizer"}),
        ({"scientific": {"optimizer": ["sgd", "lion"]}}, {"scientific.optimizer[1]"}),
        ({"nuisance": {"optimizer": ["adam", "Adam"]}}, {"nuisance.optimizer[1]"}),
        ({"nuisance": {"optimizer": {"low": 0, "high": 1}}}, {"nuisance.optimizer"}),
        ({"fixed": {"decay": "cos"}}, {"fixed.decay"}),
        ({"nuisance": {"decay": ["cosine", "poly"]}}, {"nuisance.decay[1]"}),
        *[({"fixed": {"batch_size": bad}}, {"fixed.batch_size"}) for bad in [0, -32, 32.5, True]],
        ({"fixed": {"epochs": 0}}, {"fixed.epochs"}),
        ({"scientific": {"epochs": [5, 0]}}, {"scientific.epochs[1]"}),
        ({"nuisance": {"batch_size": {"low": 0, "high": 64}}}, {"nuisance.batch_size.low"}),
        ({"nuisance": {"batch_size": {"low": 16, "high": 64, "type": "float"}}},
         {"nuisance.batch_size.type"}),
        ({"fixed": {"seed": "1"}}, {"fixed.seed"}),
        *[({"fixed": {"lr": bad}}, {"fixed.lr"}) for bad in [0, -0.1, "fast"]],
        ({"nuisance": {"lr": {"low": 0, "high": 1}}}, {"nuisance.lr.low"}),
        ({"fixed": {"warmup_epochs": -1}}, {"fixed.warmup_epochs"}),
        ({"fixed": {"warmup_epochs": 15, "epochs": 15}}, {"fixed.warmup_epochs"}),
        ({"nuisance": {"warmup_epochs": {"low": 0, "high": 20}}, "fixed": {"epochs": 15}},
         {"nuisance.warmup_epochs.high"}),
        ({"scientific": {"warmup_epochs": [0, 16]}, "fixed": {"epochs": 15}},
         {"scientific.warmup_epochs[1]"}),
        ({"fixed": {"batchnorm": "yes"}}, {"fixed.batchnorm"}),
        ({"scientific": {"augment": [1, 0]}}, {"scientific.augment[0]", "scientific.augment[1]"}),
        *[({"fixed": {"momentum": bad}}, {"fixed.momentum"}) for bad in [1.0, -0.1, 1]],
        ({"nuisance": {"momentum": {"low": 0.5, "high": 1.0}}}, {"nuisance.momentum.high"}),
        ({"fixed": {"weight_decay": -1e-4}}, {"fixed.weight_decay"}),
    ],
)
def test_standard_parameter_values(sections: dict[str, Any], paths: set[str]) -> None:
    found = problems_of(spec_dict(**sections))
    assert set(found) == paths
    assert all(p.allowed for p in found.values())


def test_standard_parameter_problem_says_what_is_allowed() -> None:
    found = problems_of(spec_dict(scientific={"optimizer": ["sgd", "lion"]}))
    problem = found["scientific.optimizer[1]"]
    assert problem.value == "lion" and "sgd, momentum, nesterov" in problem.allowed
    warmup = problems_of(spec_dict(fixed={"warmup_epochs": 15, "epochs": 15}))
    assert "below epochs (15)" in warmup["fixed.warmup_epochs"].allowed


@pytest.mark.parametrize(
    ("metric", "direction"),
    [("val_accuracy", "minimize"), ("train_accuracy", "minimize"), ("samples_per_s", "minimize"),
     ("val_loss", "maximize"), ("train_loss", "maximize"), ("loss_oscillation", "maximize")],
)
def test_standard_metrics_have_a_direction(metric: str, direction: str) -> None:
    found = problems_of(spec_dict(metric=metric, direction=direction))
    assert set(found) == {"direction"} and found["direction"].value == direction


def test_direction_default_is_checked_against_the_metric() -> None:
    found = problems_of(spec_dict(metric="val_loss"))
    assert found["direction"].value == "maximize" and found["direction"].allowed == "minimize"


def test_grid_needs_steps_and_reports_its_size() -> None:
    no_step = spec_dict(nuisance={"lr": {"low": 0.1, "high": 1.0}}, search={"sampler": "grid"})
    assert set(problems_of(no_step)) == {"nuisance.lr.step"}
    huge = spec_dict(
        nuisance={"a": {"low": 0, "high": 999, "step": 1}, "b": {"low": 0, "high": 99, "step": 1},
                  "c": [1, 2]},
        search={"sampler": "grid"},
    )
    found = problems_of(huge)
    assert set(found) == {"search.sampler"} and "200000 points" in found["search.sampler"].message


def test_a_number_as_a_top_level_key_is_an_unknown_key() -> None:
    assert set(problems_of({**spec_dict(), 4: 1})) == {"4"}


def test_unknown_keys_list_the_allowed_keys() -> None:
    found = problems_of(spec_dict(objectve="x", nuisance={"lr": {"low": 0.1, "high": 1, "lg": 1}}))
    top = found["objectve"]
    assert "name, objective, rules, metric, direction, scientific" in top.allowed
    assert "did you mean 'objective'" in top.message
    assert found["nuisance.lr.lg"].allowed == "keys low, high, log, step, type"


def test_semantic_checks_run_even_where_types_fail() -> None:
    data = spec_dict(name=7, budget={"trials": "many"},
                     nuisance={"lr": {"low": 1, "high": 0.5}, "wd": {"low": "x", "high": 1}},
                     scientific={"optimizer": ["adam", "adam"]}, fixed={"epochs": 1.5})
    assert set(problems_of(data)) == {"name", "budget.trials", "nuisance.lr.low",
                                      "nuisance.wd.low", "scientific.optimizer[1]", "fixed.epochs"}


def test_problems_come_in_spec_order_and_input_is_not_changed() -> None:
    data = spec_dict(resources={"cpu": 0}, name="X", fixed={"lr": 0},
                     nuisance={"batch_size": {"low": 8, "high": 64}})
    before = json.dumps(data, sort_keys=True)
    with pytest.raises(SpecError) as info:
        validate_spec(data, check_objective=False)
    assert [p.path for p in info.value.problems] == ["name", "fixed.lr", "resources.cpu"]
    assert json.dumps(data, sort_keys=True) == before


# ── YAML, files, error format ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\nobjective: o\nnuisance:\n  lr: {low: 1, high: 2\nfixed: {}\n", 5),
        ("name: x\n  objective: o\n", 2),
        ("name: x\nobjective: o\nfixed:\n  epochs: 3\n  epochs: 4\n", 5),  # duplicate key
    ],
)
def test_malformed_yaml_names_the_line(text: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, check_objective=False)
    [problem] = info.value.problems
    assert problem.path == "<yaml>" and f"line {line}," in problem.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", "", "# only a comment\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, check_objective=False)
    assert [p.path for p in info.value.problems] == ["<root>"]


def test_load_spec(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(FULL, encoding="utf-8")
    assert load_spec(path, check_objective=False) == parse_spec(FULL, check_objective=False)
    for bad in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(SpecError) as info:
            load_spec(bad, check_objective=False)
        assert [(p.path, p.value) for p in info.value.problems] == [("<file>", str(bad))]


def test_error_lists_every_problem_one_per_line() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec(spec_dict(budget={"trials": 0}, search={"sampler": "grd"}),
                      check_objective=False)
    error = info.value
    assert isinstance(error, ValueError)
    assert str(error).splitlines() == [
        "budget.trials: Input should be greater than or equal to 1 "
        "(got 0; allowed: an integer, 1 to 100000)",
        "search.sampler: Input should be 'tpe', 'random', 'grid', 'cmaes' or 'gp' "
        "(got \"grd\"; allowed: one of 'tpe', 'random', 'grid', 'cmaes' or 'gp')",
    ]
    assert json.loads(json.dumps(error.to_dict()))[0] == {
        "path": "budget.trials", "value": 0, "allowed": "an integer, 1 to 100000",
        "message": "Input should be greater than or equal to 1"}
    assert pickle.loads(pickle.dumps(error)).problems == error.problems


def test_values_that_are_not_json_are_shown_as_text() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("name: 2024-01-01\nobjective: o\n", check_objective=False)
    assert info.value.to_dict()[0]["value"] == "2024-01-01"


# ── models used directly ──────────────────────────────────────────────────────────────────


def test_direct_construction_runs_the_same_checks() -> None:
    with pytest.raises(ValidationError, match=r"nuisance\.lr\.low: a range needs low < high"):
        StudySpec(name="s", objective="o", nuisance={"lr": {"low": 2.0, "high": 1.0}})
    spec = StudySpec(name="s", objective="o", nuisance={"epochs": Range(low=1, high=5)})
    assert spec.nuisance["epochs"].kind == "int"
    assert Range(low=0.1, high=1.0).kind == "float"


def test_models_are_frozen() -> None:
    spec = validate_spec(spec_dict(), check_objective=False)
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.budget.trials = 3  # type: ignore[misc]


# ── the objective reference ───────────────────────────────────────────────────────────────


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A pure-Python objective module importable from sys.path; returns its module name."""
    name = "liandan_spec_test_objective"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""\
        def objective(params):
            for epoch in range(params.get("epochs", 1)):
                yield {"val_accuracy": 0.5}

        not_callable = 3
        """))
    (tmp_path / "liandan_spec_test_broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_objective_resolves(user_module: str) -> None:
    pytest.importorskip("objectives")
    spec = validate_spec(spec_dict(objective=f"{user_module}:objective"))
    assert spec.objective == f"{user_module}:objective"


@pytest.mark.parametrize(
    "ref", ["{m}:missing", "{m}:not_callable", "no_such_module_xyz:objective", "no_such_builtin",
            "liandan_spec_test_broken:objective"],
)
def test_unknown_objective_is_a_problem(user_module: str, ref: str) -> None:
    pytest.importorskip("objectives")
    ref = ref.format(m=user_module)
    with pytest.raises(SpecError) as info:
        validate_spec(spec_dict(objective=ref, budget={"trials": 0}))
    found = {p.path: p for p in info.value.problems}
    assert set(found) == {"objective", "budget.trials"}  # found alongside the other problems
    assert found["objective"].value == ref and found["objective"].message
    validate_spec(spec_dict(objective=ref), check_objective=False)  # the check is injectable


def test_builtin_objective_resolves() -> None:
    objectives = pytest.importorskip("objectives")
    assert "digits_cnn" in objectives.BUILTINS
    assert validate_spec(spec_dict(objective="digits_cnn")).objective == "digits_cnn"


def test_validating_a_builtin_objective_leaves_torch_out_of_the_driver() -> None:
    # The driver never trains: `liandan run` must not pay ~2 s importing torch to check the
    # name of a built-in. (A fresh interpreter: this one may have torch loaded already.)
    import subprocess
    import sys

    code = ("import sys; from service.spec import validate_spec; "
            "validate_spec({'name': 's', 'objective': 'digits_cnn', "
            "'nuisance': {'lr': {'low': 0.01, 'high': 0.1}}}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False", out.stderr


def test_an_objective_check_replaces_the_import_and_is_named_with_the_rest():
    import sys

    from service.spec import SpecError, SpecProblem, validate_spec

    seen = []

    def refuse(ref: str) -> list[SpecProblem]:
        seen.append(ref)
        return [SpecProblem("objective", ref, "allowed modules", "not allowed here")]

    data = {"name": "x", "objective": "this:s", "budget": {"trials": 0}}
    with pytest.raises(SpecError) as err:
        validate_spec(data, check_objective=refuse)
    assert {p.path for p in err.value.problems} == {"objective", "budget.trials"}
    assert seen == ["this:s"] and "this" not in sys.modules
    # Not a string: pydantic names it; the check is not asked about it.
    for odd in (["a"], {"a": 1}, 3):
        with pytest.raises(SpecError) as err:
            validate_spec({**data, "objective": odd}, check_objective=refuse)
        assert "objective" in {p.path for p in err.value.problems}
    assert seen == ["this:s"]


@pytest.mark.parametrize("section, value", [("fixed", 3), ("nuisance", [1, 2])])
def test_a_seed_parameter_with_seed_reruns_is_refused(section, value):
    """Seed re-runs set `seed` themselves: a spec fixing it would re-run one seed."""
    data = {"name": "s", "objective": "digits_cnn", section: {"seed": value},
            "budget": {"trials": 2, "seeds": 2}}
    with pytest.raises(SpecError) as err:
        validate_spec(data, check_objective=False)
    assert [p.path for p in err.value.problems] == [f"{section}.seed"]
    data["budget"]["seeds"] = 0
    assert validate_spec(data, check_objective=False).budget.seeds == 0
