"""The process-model matrix: real servers on loopback, known events, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import under_ci, wait_for

from voyado_tracking.testing import FakeVoyado
from voyado_tracking.testing._redis import free_port

CONTACT = "7b5c1a3e-2f4d-4e6a-9b8c-0d1e2f3a4b5c"
TESTS = Path(__file__).parent


def gunicorn_or_skip() -> None:
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        if under_ci():
            raise
        pytest.skip("gunicorn is not installed")


def get(url: str) -> bool:
    try:
        req = urllib.request.Request(url, headers={"Cookie": f"_vaI={CONTACT}"})
        with urllib.request.urlopen(req, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run_gunicorn(fake: FakeVoyado, *args: str) -> set[str]:
    """Serve 50 views under gunicorn *args*, SIGTERM it; the item ids the fake then holds."""
    gunicorn_or_skip()
    port = free_port()
    env = {**os.environ, "VOYADO_URL": fake.url,
           "VOYADO_API_KEY": fake.api_key, "PYTHONPATH": str(TESTS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/view/warmup"), timeout=30)
        skus = {f"SKU-{n}" for n in range(50)}
        assert all(get(f"http://127.0.0.1:{port}/view/{sku}") for sku in sorted(skus))
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return skus - {view.item_id for view in fake.product_views}


@pytest.mark.ci_once
@pytest.mark.timeout(90)
def test_flask_under_gunicorn_gthread_delivers_every_view_after_sigterm(
    threaded_fake: FakeVoyado,
) -> None:
    lost = run_gunicorn(threaded_fake, "-k", "gthread", "--threads", "4", "-w", "2",
                        "apps.flask_shop:app")
    assert lost == set()


@pytest.mark.ci_once
@pytest.mark.timeout(90)
def test_django_under_gunicorn_preload_sync_workers_delivers_every_view_after_sigterm(
    threaded_fake: FakeVoyado,
) -> None:
    lost = run_gunicorn(threaded_fake, "--preload", "-w", "2", "apps.django_shop:app")
    assert lost == set()

def _enqueue_in_worker(args: tuple[str, str, str]) -> None:
    import voyado_tracking as vt

    url, key, sku = args
    tracker = _pool_tracker(url, key)
    tracker.enqueue(vt.ProductView(sku, CONTACT))


_TRACKERS: dict[str, object] = {}


def _pool_tracker(url: str, key: str) -> object:
    import voyado_tracking as vt

    if url not in _TRACKERS:
        _TRACKERS[url] = vt.Tracker(url, key, client_options={"max_requests_per_second": None})
    return _TRACKERS[url]


@pytest.mark.ci_once
@pytest.mark.timeout(90)
def test_multiprocessing_pool_closed_and_joined_delivers_every_event(
    threaded_fake: FakeVoyado,
) -> None:
    import multiprocessing

    skus = [f"SKU-{n}" for n in range(40)]
    pool = multiprocessing.get_context("fork").Pool(3)
    pool.map(_enqueue_in_worker, [(threaded_fake.url, threaded_fake.api_key, s) for s in skus])
    pool.close()
    pool.join()
    wait_for(lambda: {v.item_id for v in threaded_fake.product_views} >= set(skus), timeout=30)


@pytest.mark.ci_once
@pytest.mark.timeout(90)
def test_flask_under_gunicorn_gevent_delivers_every_view_after_sigterm(
    threaded_fake: FakeVoyado,
) -> None:
    import gevent  # noqa: F401  (in the test extra: a missing one fails)
    lost = run_gunicorn(threaded_fake, "-k", "gevent", "-w", "2", "apps.flask_shop:app")
    assert lost == set()
