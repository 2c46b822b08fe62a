"""contrib.flask: VoyadoTracking against a loopback FakeVoyado."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import wait_for

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

flask = pytest.importorskip("flask")

from voyado_tracking.contrib.flask import VoyadoTracking  # noqa: E402

CONTACT = "7b5c1a3e-2f4d-4e6a-9b8c-0d1e2f3a4b5c"


def make_app(fake: FakeVoyado, **extra: Any) -> tuple[Any, VoyadoTracking]:
    app = flask.Flask(__name__)
    app.config["VOYADO_TRACKING"] = {
        "base_url": fake.url, "api_key": fake.api_key,
        "settings": {"flush_interval": 0.05}, "client_options": {"max_requests_per_second": None},
        **extra,
    }
    voyado = VoyadoTracking(app)

    @app.get("/")
    def home() -> str:
        identity = flask.g.voyado
        if identity is None:
            return "anonymous"
        assert voyado.tracker is not None
        voyado.tracker.enqueue(vt.ProductView("SKU-1", identity.contact_id))
        return str(identity.source)

    return app, voyado


def test_flask_request_with_vai_cookie_is_identified_and_its_event_delivered(
    threaded_fake: FakeVoyado,
) -> None:
    app, voyado = make_app(threaded_fake)
    try:
        http = app.test_client()
        http.set_cookie("_vaI", CONTACT)
        response = http.get("/")
        assert response.text == "cookie"
        assert f"_vaI_server={CONTACT}" in response.headers["Set-Cookie"]
        assert voyado.tracker is not None
        voyado.tracker.flush(timeout=10)
        wait_for(lambda: len(threaded_fake.product_views) == 1)
    finally:
        assert voyado.tracker is not None
        voyado.tracker.close()


def test_flask_contact_id_setting_names_the_logged_in_shopper(threaded_fake: FakeVoyado) -> None:
    app, voyado = make_app(threaded_fake, contact_id=lambda request: CONTACT)
    try:
        response = app.test_client().get("/")
        assert response.text == "site"
        assert "Set-Cookie" not in response.headers
    finally:
        assert voyado.tracker is not None
        voyado.tracker.close()


def test_flask_settings_with_an_unknown_field_is_an_error_naming_it(
    threaded_fake: FakeVoyado,
) -> None:
    app = flask.Flask(__name__)
    app.config["VOYADO_TRACKING"] = {"base_url": threaded_fake.url, "api_key": "k",
                                     "settings": {"max_dealy": 1}}
    with pytest.raises(ValueError, match="max_dealy"):
        VoyadoTracking(app)
