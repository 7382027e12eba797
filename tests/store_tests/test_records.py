"""The trial-record rules in `service.records`, each written once: finite values, a
direction's sign and better-than, unfinished and diverged trials."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from service import records
from service.records import better, diverged, finite, number, outcome, sign, unfinished


@pytest.mark.parametrize("value", [0, 1, -3, 0.5, 1e300, -1e-300])
def test_finite_numbers(value):
    assert finite(value)
    assert number(value) == float(value)
    assert type(number(value)) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None, "0.5", True, False,
                                   [1.0], {"v": 1}])
def test_not_finite(value):
    """NaN, inf, missing and text are not measurements; neither is a bool flag such as
    `diverged=True` (an accuracy averaged with it would be nonsense)."""
    assert not finite(value)
    assert number(value) is None


def test_numpy_floats_are_floats():
    np = pytest.importorskip("numpy")
    assert finite(np.float64(0.25)) and number(np.float64(0.25)) == 0.25
    assert not finite(np.float64("nan"))


def test_sign_and_better():
    assert sign("maximize") == 1 and sign("minimize") == -1
    assert better(0.9, 0.8, "maximize") and not better(0.8, 0.9, "maximize")
    assert better(0.1, 0.2, "minimize") and not better(0.2, 0.1, "minimize")
    # A tie is not better: the first of equal values stays the best.
    assert not better(0.5, 0.5, "maximize") and not better(0.5, 0.5, "minimize")


@pytest.mark.parametrize("direction", ["max", "Maximize", "", None, ["maximize"]])
def test_an_unknown_direction_is_refused(direction):
    """Read as minimize, a typo would rank every trial backwards without a word."""
    with pytest.raises(ValueError, match="direction"):
        sign(direction)


def trial(**attrs):
    return SimpleNamespace(user_attrs=attrs)


@pytest.mark.parametrize("reason", records.UNFINISHED)
def test_unfinished_reasons(reason):
    assert unfinished(trial(fail_reason=reason))


@pytest.mark.parametrize("reason", [records.ERROR, records.DIVERGED, records.NO_METRIC, None])
def test_finished_reasons(reason):
    """A trial that errored, diverged or never yielded its metric did finish: its budget is
    spent and not run again."""
    assert not unfinished(trial(fail_reason=reason))
    assert not unfinished(trial())


@pytest.mark.parametrize(("attrs", "expected"), [
    ({}, True), ({"diverged": True}, True), ({"fail_reason": records.DIVERGED}, True),
    ({"fail_reason": records.ERROR}, False), ({"fail_reason": records.NO_METRIC}, False),
    *[({"fail_reason": reason}, False) for reason in records.UNFINISHED]])
def test_outcome(attrs, expected):
    """What a rate over configurations counts: a diverged run is one, a crash of the
    objective and a trial that never got to finish are not."""
    assert outcome(trial(**attrs)) is expected


def test_diverged_either_way():
    assert diverged(trial(diverged=True))  # COMPLETE, the loss blew up
    assert diverged(trial(fail_reason=records.DIVERGED))  # FAIL, its metric was NaN
    assert not diverged(trial(diverged=False))
    assert not diverged(trial(fail_reason=records.ERROR))
    assert not diverged(trial())


def test_records_stays_light():
    """Importing the vocabulary pulls in neither Ray, torch nor Optuna."""
    import subprocess
    import sys

    code = ("import sys, service.records; "
            "print(sorted(m for m in ('ray', 'torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
