"""Every rule check, by rule ID, gathered from the family modules."""

from __future__ import annotations

import importlib

from service.rulebook._base import RuleCheck

# One module per family of rules; each exports CHECKS: list[RuleCheck].
FAMILIES = (
    "service.rulebook.throughput",  # R1: power-of-two batch sizes
    "service.rulebook.batch",  # R2-R4: batch size (loss noise, epochs, generalization)
    "service.rulebook.scaling",  # R9: linear LR scaling
    "service.rulebook.optimizers",  # R5-R8: momentum, AdaGrad, RMSProp, Adam
    "service.rulebook.schedules",  # R10-R11: warmup, cosine decay
    "service.rulebook.regularization",  # R12-R14: BatchNorm, weight decay, augmentation
)
RULE_IDS = tuple(f"R{i}" for i in range(1, 15))


def all_checks() -> dict[str, RuleCheck]:
    """Rule ID -> check, in R1..R14 order, for every family module that exists."""
    checks: dict[str, RuleCheck] = {}
    for name in FAMILIES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for check in module.CHECKS:
            checks[check.rule] = check
    return {r: checks[r] for r in RULE_IDS if r in checks}
