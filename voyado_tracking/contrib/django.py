"""Django: ``settings.VOYADO_TRACKING``, a process-wide ``tracker()`` and ``VoyadoMiddleware``."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from . import require

require("django", "django")

from asgiref.sync import iscoroutinefunction, markcoroutinefunction  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from .._identity import Identity, identify, server_cookie_header  # noqa: E402
from .._tracker import Tracker  # noqa: E402
from ._config import known_contact, split_config  # noqa: E402

_lock = threading.Lock()
_tracker: Tracker | None = None
_ident: dict[str, Any] | None = None


def _config() -> tuple[dict[str, Any], dict[str, Any]]:
    config = dict(getattr(settings, "VOYADO_TRACKING", None) or {})
    if isinstance(config.get("contact_id"), str):
        config["contact_id"] = import_string(config["contact_id"])
    return split_config(config)


def tracker() -> Tracker:
    """The process's Tracker, built from ``settings.VOYADO_TRACKING`` on first call.

    Safe to call at import time under ``gunicorn --preload``: the Tracker is fork-safe.
    """
    global _tracker
    if _tracker is None:
        with _lock:
            if _tracker is None:
                _tracker = Tracker(**_config()[0])
    return _tracker


def _identity_options() -> dict[str, Any]:
    global _ident
    if _ident is None:
        _ident = _config()[1]
    return _ident


def _identify(request: HttpRequest) -> Identity | None:
    ident = _identity_options()
    identity = identify(
        request.GET, request.META.get("HTTP_COOKIE", ""),  # raw: COOKIES keeps one duplicate
        contact_id=known_contact(ident, request),
        eclub_key=ident.get("eclub_key"), eclub_max_age=ident.get("eclub_max_age"),
    )
    request.voyado = identity
    return identity


def _set_cookie(request: HttpRequest, identity: Identity | None, response: HttpResponse) -> None:
    if identity is not None and identity.needs_server_cookie:
        name, _, rest = server_cookie_header(
            identity.contact_id, secure=request.is_secure()
        ).partition("=")
        value = rest.partition(";")[0]
        response.set_cookie(name, value, max_age=31536000, path="/", samesite="Lax",
                            secure=request.is_secure(), httponly=False)


class VoyadoMiddleware:
    """Set ``request.voyado`` (Identity or None) and the ``_vaI_server`` cookie when needed."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        identity = _identify(request)
        response: HttpResponse = self.get_response(request)
        _set_cookie(request, identity, response)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        identity = _identify(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        response = await get_response(request)
        _set_cookie(request, identity, response)
        return response
