"""The rulebook: one module per family of the blog's rules (RULES.md R1-R14), their
statistics, the decision of verdicts under one Holm family, and the rulebook report."""

from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook.decision import finalize

__all__ = ["Finding", "RuleCheck", "finalize", "not_tested"]
