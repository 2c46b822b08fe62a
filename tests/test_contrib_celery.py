"""contrib.celery: the worker's Tracker is flushed and closed at worker shutdown."""

from __future__ import annotations

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

celery = pytest.importorskip("celery")

CONTACT = "7b5c1a3e-2f4d-4e6a-9b8c-0d1e2f3a4b5c"


@pytest.mark.parametrize("signal_name", ["worker_process_shutdown", "worker_shutdown"])
def test_celery_shutdown_signal_delivers_what_tasks_enqueued(
    threaded_fake: FakeVoyado, signal_name: str,
) -> None:
    from celery import signals

    from voyado_tracking.contrib.celery import setup

    app = celery.Celery("shop")
    tracker = setup(app, base_url=threaded_fake.url, api_key=threaded_fake.api_key,
                    client_options={"max_requests_per_second": None})
    assert app.voyado_tracker is tracker
    tracker.enqueue(vt.ProductView("SKU-1", CONTACT))
    getattr(signals, signal_name).send(sender=None)
    assert tracker.closed
    assert len(threaded_fake.product_views) == 1
