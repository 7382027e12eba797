"""Search-space edges: a tuned numeric parameter whose chosen value sits at the edge of its
range was not tuned to its optimum (the Tuning Playbook's sign of too narrow a search).

The rule, stated once: a value is at an edge when it is an end of a searched list of 3 or
more numbers, or lies in the outer 5% of a range (of the log range for a log range). The
chosen value of an arm is that of its seed re-runs (they repeat the chosen configuration),
else of its best complete tuning trial. The ◆ findings JSON lists the warnings; the rulebook
leaves a comparison with such an arm undecided (RULES.md).
"""

from __future__ import annotations

import math
from typing import Any

from service.records import finite
from service.store.study_data import ArmData, StudyData

__all__ = ["EDGE_FRACTION", "chosen_params", "edge_of", "search_space_warnings"]

EDGE_FRACTION = 0.05


def edge_of(domain: Any, value: Any) -> str | None:
    """"low", "high" or None: where `value` sits in the searched `domain` (see module doc)."""
    if not finite(value):
        return None
    if isinstance(domain, list):
        nums = [v for v in domain if finite(v)]
        if len(nums) < 3 or len(nums) != len(domain):
            return None
        return "low" if value <= min(nums) else "high" if value >= max(nums) else None
    if not isinstance(domain, dict) or not (finite(domain.get("low"))
                                            and finite(domain.get("high"))):
        return None
    low, high, v = float(domain["low"]), float(domain["high"]), float(value)
    if domain.get("log") and low > 0 and v > 0:
        low, high, v = math.log(low), math.log(high), math.log(v)
    if high <= low:
        return None
    if v - low <= EDGE_FRACTION * (high - low):
        return "low"
    if high - v <= EDGE_FRACTION * (high - low):
        return "high"
    return None


def chosen_params(arm: ArmData, direction: str) -> dict[str, Any] | None:
    """The arm's chosen configuration: its evidence seed re-runs', else its best tune's."""
    seeds = [t for t in arm.seeds() if t.user_attrs.get("stage") in (None, "evidence")]
    if seeds:
        return dict(seeds[0].params)
    best = arm.best_tune(direction)
    return None if best is None else dict(best.params)


def search_space_warnings(data: StudyData) -> list[dict[str, Any]]:
    """One warning per arm and tuned numeric parameter whose chosen value is at an edge."""
    out = []
    for arm in data.arms:
        params = chosen_params(arm, data.direction)
        for name, domain in (data.spec.get("nuisance") or {}).items():
            value = None if params is None else params.get(name)
            edge = edge_of(domain, value)
            if edge is None:
                continue
            span = ([min(domain), max(domain)] if isinstance(domain, list)
                    else [domain.get("low"), domain.get("high")])
            out.append({"study": data.name, "arm": arm.label or data.name, "param": name,
                        "edge": edge, "best": value, "range": span})
    return out
