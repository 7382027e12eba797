from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import objectives
from objectives import BUILTINS, ObjectiveNotFound, resolve

PURE_PYTHON_OBJECTIVE = textwrap.dedent(
    """
    def objective(params):
        # A user's objective: no torch, no Ray, no Optuna.
        for epoch in range(1, params["epochs"] + 1):
            yield {"epoch": epoch, "val_accuracy": 1 - 1 / (epoch + params["x"])}

    not_callable = 42
    """
)


@pytest.fixture
def user_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what resolving a user module does to the interpreter: sys.path and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("liandan_test_"):
            del sys.modules[name]


def test_public_api() -> None:
    assert set(BUILTINS) == {"digits_cnn", "mnist_cnn", "fashion_mnist_cnn", "cifar10_resnet"}
    assert set(objectives.__all__) == {
        "BUILTINS",
        "DEFAULTS",
        "Objective",
        "ObjectiveNotFound",
        "resolve",
    }
    assert issubclass(ObjectiveNotFound, LookupError)


def test_importing_objectives_does_not_import_torch() -> None:
    code = "import sys, objectives; assert 'torch' not in sys.modules, 'torch imported'"
    repository = Path(objectives.__file__).parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repository)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_names(name: str) -> None:
    objective = resolve(name)
    assert callable(objective)
    assert objective.__name__ == name
    assert BUILTINS[name] == f"objectives.builtin:{name}"
    assert resolve(BUILTINS[name]) is objective


def test_module_function_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_modules: None
) -> None:
    (tmp_path / "liandan_test_flat.py").write_text(PURE_PYTHON_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))

    objective = resolve("liandan_test_flat:objective")
    assert list(objective({"epochs": 2, "x": 1})) == [
        {"epoch": 1, "val_accuracy": 0.5},
        {"epoch": 2, "val_accuracy": pytest.approx(2 / 3)},
    ]


def test_package_module_function_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_modules: None
) -> None:
    package = tmp_path / "liandan_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(PURE_PYTHON_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))

    objective = resolve("liandan_test_pkg.models:objective")
    assert next(objective({"epochs": 1, "x": 3})) == {"epoch": 1, "val_accuracy": 0.75}


def test_module_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_modules: None
) -> None:
    (tmp_path / "liandan_test_cwd.py").write_text(PURE_PYTHON_OBJECTIVE)
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in sys.path

    objective = resolve("liandan_test_cwd:objective")
    assert next(objective({"epochs": 1, "x": 0}))["epoch"] == 1


def test_unknown_name_lists_builtins_and_the_reference_form() -> None:
    with pytest.raises(ObjectiveNotFound) as error:
        resolve("resnet50")
    message = str(error.value)
    assert "'resnet50'" in message
    assert "digits_cnn" in message and "cifar10_resnet" in message
    assert "package.module:function" in message


@pytest.mark.parametrize("ref", ["", ":objective", "module:", "digits-cnn"])
def test_malformed_references(ref: str) -> None:
    with pytest.raises(ObjectiveNotFound, match="package.module:function"):
        resolve(ref)


def test_missing_module_names_the_module_and_the_import_error(user_modules: None) -> None:
    with pytest.raises(ObjectiveNotFound) as error:
        resolve("liandan_test_nowhere.models:objective")
    message = str(error.value)
    assert "'liandan_test_nowhere.models'" in message
    assert "ModuleNotFoundError" in message
    assert "liandan_test_nowhere" in message


def test_a_broken_import_inside_the_module_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_modules: None
) -> None:
    (tmp_path / "liandan_test_broken.py").write_text("import liandan_test_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ObjectiveNotFound, match="liandan_test_missing_dependency"):
        resolve("liandan_test_broken:objective")


def test_missing_or_uncallable_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_modules: None
) -> None:
    (tmp_path / "liandan_test_attrs.py").write_text(PURE_PYTHON_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ObjectiveNotFound, match="has no attribute 'train'"):
        resolve("liandan_test_attrs:train")
    with pytest.raises(ObjectiveNotFound, match=r"is not callable \(type int\)"):
        resolve("liandan_test_attrs:not_callable")
