"""Flask: ``VoyadoTracking(app)`` or ``init_app``; ``g.voyado`` is the visitor's Identity."""

from __future__ import annotations

from typing import Any

from . import require

require("flask", "flask")

from flask import Flask, Response, g, request  # noqa: E402

from .._identity import identify, server_cookie_header  # noqa: E402
from .._tracker import Tracker  # noqa: E402
from ._config import known_contact, split_config  # noqa: E402


class VoyadoTracking:
    """A ``Tracker`` from ``app.config["VOYADO_TRACKING"]`` and per-request identification."""

    def __init__(self, app: Flask | None = None) -> None:
        self.tracker: Tracker | None = None
        self._ident: dict[str, Any] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        kwargs, self._ident = split_config(app.config.get("VOYADO_TRACKING", None) or {})
        self.tracker = Tracker(**kwargs)
        app.extensions["voyado_tracking"] = self
        app.before_request(self._identify)
        app.after_request(self._set_cookie)

    def _identify(self) -> None:
        ident = self._ident
        g.voyado = identify(
            request.args, request.headers.get("Cookie", ""),
            contact_id=known_contact(ident, request),
            eclub_key=ident.get("eclub_key"), eclub_max_age=ident.get("eclub_max_age"),
        )

    def _set_cookie(self, response: Response) -> Response:
        identity = g.get("voyado")
        if identity is not None and identity.needs_server_cookie:
            response.headers.add(
                "Set-Cookie", server_cookie_header(identity.contact_id, secure=request.is_secure)
            )
        return response
