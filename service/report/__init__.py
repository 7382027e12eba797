"""The study report: markdown sections, plots, reproduce lines, the dashboard note.

Knows nothing of rules: the rulebook's report (verdicts, findings) is in `service.rulebook`.
"""
