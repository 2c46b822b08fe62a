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


@pytest.mark.ci_once
@pytest.mark.timeout(90)
def test_flask_under_gunicorn_gthread_delivers_every_view_after_sigterm(
    threaded_fake: FakeVoyado,
) -> None:
    gunicorn_or_skip()
    port = free_port()
    env = {**os.environ, "VOYADO_URL": threaded_fake.url,
           "VOYADO_API_KEY": threaded_fake.api_key, "PYTHONPATH": str(TESTS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", "2",
         "-b", f"127.0.0.1:{port}", "apps.flask_shop:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/view/warmup"), timeout=30)
        skus = [f"SKU-{n}" for n in range(50)]
        assert all(get(f"http://127.0.0.1:{port}/view/{sku}") for sku in skus)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    seen = {view.item_id for view in threaded_fake.product_views}
    assert set(skus) <= seen
