"""The ``VOYADO_TRACKING`` configuration shared by the Django and Flask integrations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._settings import FlushSettings
from .._tracker import Tracker

IDENTITY_KEYS = ("eclub_key", "eclub_max_age", "contact_id")


def split_config(
    config: Mapping[str, Any], name: str = "VOYADO_TRACKING"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Tracker kwargs, identify options) from a ``VOYADO_TRACKING`` mapping."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(config).__name__}")
    kwargs = {k: v for k, v in config.items() if k not in IDENTITY_KEYS}
    for key in ("base_url", "api_key"):
        if key not in kwargs:
            raise ValueError(f"{name} needs {key!r}")
    settings = kwargs.get("settings")
    if isinstance(settings, Mapping):
        try:
            kwargs["settings"] = FlushSettings(**settings)
        except TypeError as exc:
            raise ValueError(f"{name}['settings']: {exc}") from None
    ident = {k: config[k] for k in IDENTITY_KEYS if k in config}
    getter = ident.get("contact_id")
    if getter is not None and not callable(getter):
        raise TypeError(f"{name}['contact_id'] must be a callable request -> contact id or None")
    return kwargs, ident


def build_tracker(config: Mapping[str, Any], name: str = "VOYADO_TRACKING") -> Tracker:
    kwargs, _ = split_config(config, name)
    return Tracker(**kwargs)


def known_contact(ident: Mapping[str, Any], request: Any) -> Any:
    getter: Callable[[Any], Any] | None = ident.get("contact_id")
    return None if getter is None else getter(request)
