"""The rulebook: one module per family of the blog's rules (RULES.md R1-R14), their
statistics, and the rulebook report (verdicts and findings)."""

from service.rulebook._base import Finding, RuleCheck, finalize, not_tested

__all__ = ["Finding", "RuleCheck", "finalize", "not_tested"]
