"""User code travels by value.

A task defined in the user's script, notebook or test module, and the helpers it calls from
sibling modules of the user's project, must run on workers whose Python path has none of
those modules. cloudpickle sends ``__main__`` by value already; every other module that is
neither installed (site-packages, the standard library) nor Shoal itself is registered with
:func:`cloudpickle.register_pickle_by_value`, so its functions and classes travel as code.
Installed packages stay by reference: workers import their own copy.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import cloudpickle

_checked: set[str] = set()
_modules_seen = 0  # len(sys.modules) when last checked: each run's check is then ~free


def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


_INSTALLED = _installed_dirs()


def is_user_module(module: ModuleType) -> bool:
    """Whether ``module`` is the user's own code (not installed, not Shoal, not built in)."""
    name = module.__name__
    if name == "__main__" or name == "shoal" or name.startswith("shoal."):
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False  # built in, frozen or a namespace package
    return not os.path.realpath(file).startswith(_INSTALLED)


def ship_user_code(functions: Iterable[Any] = ()) -> None:
    """Register every user module imported so far to pickle by value. ``functions`` are
    the run's task functions; their modules are checked even if imported oddly."""
    global _modules_seen
    modules = []
    for fn in functions:
        module = sys.modules.get(getattr(fn.func, "__module__", "") or "")
        if module is not None:
            modules.append(module)
    if len(sys.modules) != _modules_seen:  # imports since: ~1 ms a run to look at all
        _modules_seen = len(sys.modules)
        modules += [m for m in list(sys.modules.values()) if isinstance(m, ModuleType)]
    for module in modules:
        name = module.__name__
        if name in _checked:
            continue
        _checked.add(name)
        if is_user_module(module):
            cloudpickle.register_pickle_by_value(module)
