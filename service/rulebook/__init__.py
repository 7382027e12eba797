"""The rulebook: one module per family of the blog's rules (RULES.md R1-R14)."""

from service.rulebook._base import (
    ArmData,
    Finding,
    RuleCheck,
    StudyData,
    finalize,
    load_study_data,
    not_tested,
)

__all__ = ["ArmData", "Finding", "RuleCheck", "StudyData", "finalize", "load_study_data",
           "not_tested"]
