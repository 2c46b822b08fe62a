"""Run by .ci/release-check inside a venv where the built wheel is installed (not the tree).

Imports every public name (``voyado_tracking.__all__``, ``voyado_tracking.testing``,
``voyado_tracking.redis``) and every module found under ``voyado_tracking.contrib``, checks
py.typed, the console script and the pytest plugin entry point. With ``--strict`` (every extra
installed) all must import; without, a name may only fail with an ImportError that names the
extra to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import pkgutil
import sys
from types import ModuleType

strict = "--strict" in sys.argv[1:]
failures: list[str] = []
needs_extra: list[str] = []


def attempt(what: str, load: object) -> object:
    try:
        return load() if callable(load) else None
    except ImportError as error:
        if not strict and "voyado-tracking[" in str(error):
            needs_extra.append(what)
        else:
            failures.append(f"{what}: {type(error).__name__}: {error}")
    except Exception as error:
        failures.append(f"{what}: {type(error).__name__}: {error}")
    return None


def names(module_name: str) -> None:
    module = attempt(module_name, lambda: importlib.import_module(module_name))
    if isinstance(module, ModuleType):
        for name in getattr(module, "__all__", ()):
            attempt(f"{module_name}.{name}", lambda name=name: getattr(module, name))


import voyado_tracking  # noqa: E402

if "site-packages" not in (voyado_tracking.__file__ or ""):
    sys.exit(f"voyado_tracking comes from {voyado_tracking.__file__}, not the installed wheel")
for module_name in ("voyado_tracking", "voyado_tracking.testing", "voyado_tracking.redis"):
    names(module_name)
if importlib.util.find_spec("voyado_tracking.contrib") is not None:
    contrib = importlib.import_module("voyado_tracking.contrib")
    for found in pkgutil.walk_packages(contrib.__path__, "voyado_tracking.contrib."):
        names(found.name)
if not importlib.resources.files("voyado_tracking").joinpath("py.typed").is_file():
    failures.append("py.typed is missing from the package")
scripts = importlib.metadata.entry_points(group="console_scripts", name="voyado-tracking")
if not scripts:
    failures.append("the voyado-tracking console script is not declared")
for script in scripts:
    attempt(f"console script {script.value}", script.load)
plugins = importlib.metadata.entry_points(group="pytest11", name="voyado_tracking")
if not plugins:
    failures.append("the pytest11 entry point voyado_tracking is not declared")
if importlib.util.find_spec("pytest") is not None:
    for plugin in plugins:
        attempt(f"pytest plugin {plugin.value}", plugin.load)

if needs_extra:
    print(f"  need another extra (ImportError naming it): {', '.join(needs_extra)}")
if failures:
    print("\n".join(f"  FAILED {line}" for line in failures))
    sys.exit(1)
print("  every public and contrib name imports" + ("" if strict else " (or names its extra)"))
