"""The standard hyperparameters, their defaults, and their coercion from a trial's dict.

Rule checks and study specs address hyperparameters by these names, so the names are part of
the objective protocol. The values arrive from Optuna or YAML, where an integer learning rate or
a numpy scalar is normal; :meth:`Hyperparams.from_params` turns them into plain typed values
once, so the training loop never has to care. Torch-free, like :mod:`objectives.protocol`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from objectives.schedule import DECAYS


@dataclasses.dataclass(frozen=True)
class Hyperparams:
    """The standard parameters of the built-in objectives, with their defaults."""

    batch_size: int = 64
    optimizer: str = "momentum"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0  # may be fractional: 0.5 warms up over half an epoch's steps
    decay: str = "cosine"
    epochs: int = 10
    batchnorm: bool = True
    augment: bool = False
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Hyperparams:
        """Read the standard names from ``params``; other keys are ignored, missing ones default.

        Raises ValueError naming every invalid value, since a bad value is a spec bug and not a
        trial outcome.
        """
        values: dict[str, Any] = {}
        problems = []
        for field in dataclasses.fields(cls):
            raw = params.get(field.name, field.default)
            try:
                values[field.name] = _coerce(raw, field.type)
            except (TypeError, ValueError):
                problems.append(f"{field.name}={raw!r} is not a {field.type}")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        hp = cls(**values)
        problems = hp._range_problems()
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        return hp

    def _range_problems(self) -> list[str]:
        checks = [
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.lr >= 0.0, f"lr={self.lr} must be >= 0"),
            (self.momentum >= 0.0, f"momentum={self.momentum} must be >= 0"),
            (self.weight_decay >= 0.0, f"weight_decay={self.weight_decay} must be >= 0"),
            (self.warmup_epochs >= 0.0, f"warmup_epochs={self.warmup_epochs} must be >= 0"),
            (self.epochs >= 1, f"epochs={self.epochs} must be >= 1"),
            (self.decay in DECAYS, f"decay={self.decay!r} is not one of {', '.join(DECAYS)}"),
        ]
        return [message for ok, message in checks if not ok]


def _coerce(value: Any, type_name: str) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    if type_name == "bool":
        # bool("false") is True, so strings get an explicit reading.
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        return bool(value)
    if type_name == "int":
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError(value)
        return int(as_float)
    if type_name == "float":
        return float(value)
    return str(value)


# The default of each standard parameter, as a plain dict for specs and reports.
DEFAULTS: dict[str, Any] = dataclasses.asdict(Hyperparams())
