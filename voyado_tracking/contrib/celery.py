"""Celery: ``setup(celery_app, base_url=..., api_key=...)`` returns the worker's Tracker."""

from __future__ import annotations

from typing import Any

from . import require

require("celery", "celery")

from celery import Celery  # noqa: E402
from celery.signals import worker_process_shutdown, worker_shutdown  # noqa: E402

from .._tracker import Tracker  # noqa: E402


def setup(celery_app: Celery, *, base_url: str, api_key: str, **options: Any) -> Tracker:
    """A Tracker for tasks to enqueue on, closed within its ``shutdown_timeout`` at shutdown.

    The Tracker is fork-safe, so each prefork child starts its own thread and client on first
    use; each child flushes at ``worker_process_shutdown`` and the main process (solo, threads
    and gevent pools) at ``worker_shutdown``. Also at ``celery_app.voyado_tracker``.
    """
    tracker = Tracker(base_url, api_key, **options)
    celery_app.voyado_tracker = tracker

    def close(**_: Any) -> None:
        tracker.close()

    worker_process_shutdown.connect(close, weak=False)
    worker_shutdown.connect(close, weak=False)
    return tracker
