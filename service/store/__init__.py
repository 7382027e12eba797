"""Where studies live: the Optuna storage, the fast trial reader, status read-outs and the
study-data model (`StudyData`, `ArmData`) that reports and rule checks read.

The only package that touches Optuna's private API or runs SQL on Optuna's tables.
"""
