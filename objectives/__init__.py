"""Objectives: functions that train a model and yield one dict of metrics per epoch.

``resolve("digits_cnn")`` or ``resolve("my_package.my_module:my_objective")`` returns an
:data:`Objective`; iterate it with a params dict that uses the standard names of
:data:`DEFAULTS`. Importing this package does not import torch; resolving a built-in does.
"""

from objectives.params import DEFAULTS
from objectives.protocol import Objective
from objectives.registry import BUILTINS, ObjectiveNotFound, resolve

__all__ = ["BUILTINS", "DEFAULTS", "Objective", "ObjectiveNotFound", "resolve"]
