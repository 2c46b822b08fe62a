"""A Flask shop for the process-model tests: every request enqueues one product view."""

from __future__ import annotations

import os

import flask

import voyado_tracking as vt
from voyado_tracking.contrib.flask import VoyadoTracking

app = flask.Flask(__name__)
app.config["VOYADO_TRACKING"] = {
    "base_url": os.environ["VOYADO_URL"], "api_key": os.environ["VOYADO_API_KEY"],
    "client_options": {"max_requests_per_second": None},
}
voyado = VoyadoTracking(app)


@app.get("/view/<sku>")
def view(sku: str) -> str:
    assert voyado.tracker is not None
    assert flask.g.voyado is not None
    voyado.tracker.enqueue(vt.ProductView(sku, flask.g.voyado.contact_id))
    return "ok"
