"""Which objectives the service runs (service/server/allowed.py) and the settings that say so:
decided by name in the API, imported only in a child process or a worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.server.allowed import (
    allowlist_problems,
    check_in_child,
    check_runnable,
    module_allowed,
)
from service.server.api.settings import Settings, host_of

ALLOWED = ("toy_objectives", "labs.*", "tools.metrics:score")


@pytest.mark.parametrize(("ref", "ok"), [
    ("digits_cnn", True), ("objectives.builtin:digits_cnn", True),
    ("toy_objectives:quadratic", True), ("labs:f", True), ("labs.vision.cnn:train", True),
    ("tools.metrics:score", True), ("tools.metrics:other", False),
    ("labsx:f", False), ("toy_objectives_evil:f", False), ("toy:quadratic", False),
    ("subprocess:run", False), ("os:system", False), ("builtins:exec", False),
    ("ctypes:CDLL", False), ("this:s", False),
    # An attribute path reaches whatever the allowed module imported.
    ("toy_objectives:os.system", False), ("toy_objectives:_private", False),
    ("toy_objectives", False), ("toy_objectives:", False), (":f", False),
])
def test_the_allow_list_decides_by_name(ref: str, ok: bool):
    before = set(sys.modules)
    assert (allowlist_problems(ref, ALLOWED) == []) is ok
    assert set(sys.modules) == before  # nothing imported to decide


def test_a_package_prefix_covers_the_package_and_its_modules_only():
    assert module_allowed("labs", ["labs.*"]) and module_allowed("labs.a.b", ["labs.*"])
    assert not module_allowed("labs2", ["labs.*"]) and not module_allowed("lab", ["labs.*"])
    assert not module_allowed("anything", [])


def test_check_runnable_imports_and_wants_the_function_defined_in_an_allowed_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "mixed_objectives.py").write_text(
        "from os import system\n\ndef own(params):\n    yield {'epoch': 1}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_runnable("mixed_objectives:own", ["mixed_objectives"])
    with pytest.raises(PermissionError, match="defined in module"):
        check_runnable("mixed_objectives:system", ["mixed_objectives"])
    with pytest.raises(PermissionError, match="not allowed"):
        check_runnable("os:system", ["mixed_objectives"])
    check_runnable("digits_cnn", [])  # a built-in: allowed, and torch is not loaded for it


def test_the_child_check_keeps_the_import_out_of_this_process(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "loud_objectives.py").write_text(
        "print('LOUD AT IMPORT')\n\ndef f(params):\n    yield {'epoch': 1}\n")
    (tmp_path / "broken_objectives.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    assert check_in_child("loud_objectives:f", ["loud_objectives"]) == []
    assert "loud_objectives" not in sys.modules
    [problem] = check_in_child("loud_objectives:g", ["loud_objectives"])
    assert "has no attribute 'g'" in problem.message
    [problem] = check_in_child("broken_objectives:f", ["broken_objectives"])
    assert "RuntimeError: no GPU here" in problem.message
    assert "broken_objectives" not in sys.modules


def test_settings_read_comma_separated_lists_and_refuse_a_wildcard(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LIANDAN_ALLOW_OBJECTIVES", " toy_objectives, labs.* ,")
    monkeypatch.setenv("LIANDAN_ALLOWED_HOSTS", "Tune.Example.com")
    monkeypatch.setenv("LIANDAN_MAX_TRIALS", "500")
    settings = Settings()
    assert settings.allow_objectives == ("toy_objectives", "labs.*")
    assert settings.max_trials == 500
    assert "tune.example.com" in settings.served_hosts()
    for bad in ("*", "os system", "a.*.b", "a;b"):
        with pytest.raises(ValidationError, match="not a module name"):
            Settings(allow_objectives=(bad,))
    with pytest.raises(ValidationError, match="not a host name"):
        Settings(allowed_hosts=("evil.example:80/x",))


def test_served_hosts_on_loopback_are_the_loopback_names_only():
    hosts = Settings().served_hosts()
    assert {"127.0.0.1", "localhost", "::1"} <= hosts
    assert "attacker.example" not in hosts and "" not in hosts
    assert host_of("LOCALHOST:8000") == "localhost" and host_of("[::1]:80") == "::1"
    assert host_of("") is None and host_of("a:b") is None
