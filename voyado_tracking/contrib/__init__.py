"""Framework integrations: one module per framework, each importing its framework lazily."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_BUFFER_OPTIONS = frozenset({"settings", "on_drop", "on_dead_letter", "spool_path", "journal"})


def require(module: str, extra: str | None) -> ModuleType:
    """Import *module*, or raise ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'voyado-tracking[{extra}]'" if extra else f"pip install {module}"
        raise ImportError(f"voyado_tracking.contrib needs {module}: {hint}") from exc


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``**options`` into (TrackingClient kwargs, TrackingBuffer kwargs)."""
    buffer = {k: v for k, v in options.items() if k in _BUFFER_OPTIONS}
    client = {k: v for k, v in options.items() if k not in _BUFFER_OPTIONS}
    return client, buffer
