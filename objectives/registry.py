"""Find an objective by reference: a built-in name or ``package.module:function``.

Built-ins are stored as import paths, not functions, so that ``import objectives`` stays cheap
(no torch) for the parts of the service that only validate specs; the import happens in
:func:`resolve`, which is called where the trial runs.
"""

from __future__ import annotations

import importlib
import os
import sys

from objectives.protocol import Objective

BUILTINS: dict[str, str] = {
    "digits_cnn": "objectives.builtin:digits_cnn",
    "mnist_cnn": "objectives.builtin:mnist_cnn",
    "fashion_mnist_cnn": "objectives.builtin:fashion_mnist_cnn",
    "cifar10_resnet": "objectives.builtin:cifar10_resnet",
}


class ObjectiveNotFound(LookupError):
    """The reference names no importable, callable objective; the message says what was tried."""


def resolve(ref: str) -> Objective:
    """Return the objective that ``ref`` names.

    ``ref`` is a key of :data:`BUILTINS` or ``package.module:function`` (the function may be a
    dotted attribute path, e.g. ``module:Class.method``). A module that does not import from
    ``sys.path`` is retried from the current working directory, so a user's ``my_model.py`` next
    to their spec works without installing it.
    """
    path = BUILTINS.get(ref, ref)
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ObjectiveNotFound(
            f"no objective {ref!r}: it is not a built-in ({', '.join(BUILTINS)}) and not of the "
            "form 'package.module:function'"
        )
    module = _import(module_name, ref)

    target: object = module
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ObjectiveNotFound(
                f"no objective {ref!r}: module {module_name!r} ({_origin(module)}) has no "
                f"attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise ObjectiveNotFound(
            f"no objective {ref!r}: {module_name}:{attr_path} is not callable "
            f"(type {type(target).__name__})"
        )
    return target  # type: ignore[return-value]


def _import(module_name: str, ref: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ImportError as first_error:
        cwd = os.getcwd()
        if cwd in sys.path:
            message = _import_message(ref, module_name, first_error)
            raise ObjectiveNotFound(message) from first_error
        sys.path.insert(0, cwd)
        # The path finders cache directory listings; a module written since the last import
        # attempt would otherwise stay invisible.
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        except ImportError as error:
            sys.path.remove(cwd)
            raise ObjectiveNotFound(_import_message(ref, module_name, error)) from error


def _import_message(ref: str, module_name: str, error: ImportError) -> str:
    return (
        f"no objective {ref!r}: module {module_name!r} could not be imported "
        f"({type(error).__name__}: {error}); searched sys.path and the working directory "
        f"{os.getcwd()!r}"
    )


def _origin(module: object) -> str:
    return getattr(module, "__file__", None) or "built-in module"
