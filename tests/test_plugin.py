"""The pytest plugin (entry point ``pytest11``): voyado_fake, voyado_client, voyado_buffer."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import view

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_voyado_fake_is_a_started_fake_on_loopback(voyado_fake: FakeVoyado) -> None:
    assert isinstance(voyado_fake, FakeVoyado)
    assert voyado_fake.url.startswith("http://127.0.0.1:")
    assert voyado_fake.requests == []


async def test_voyado_client_sends_to_voyado_fake(
    voyado_client: vt.TrackingClient, voyado_fake: FakeVoyado
) -> None:
    sent = view("SKU-1")
    await voyado_client.register_product_view(sent)
    assert voyado_fake.product_views == [sent]
    assert voyado_fake.requests[0].key_ok


async def test_voyado_buffer_delivers_within_its_short_flush_interval(
    voyado_buffer: vt.TrackingBuffer, voyado_fake: FakeVoyado
) -> None:
    voyado_buffer.enqueue(view("SKU-1"))
    for _ in range(200):  # at most 2 s; the interval is 50 ms
        if voyado_fake.product_views:
            break
        await asyncio.sleep(0.01)
    assert [v.item_id for v in voyado_fake.product_views] == ["SKU-1"]


@pytest.fixture
def delivered_after_teardown(voyado_fake: FakeVoyado) -> Iterator[list[str]]:
    """Set up before voyado_buffer, so torn down after it: sees what its close delivered."""
    expected: list[str] = []
    yield expected
    assert [v.item_id for v in voyado_fake.product_views] == expected


async def test_voyado_buffer_is_drained_when_the_test_ends(
    delivered_after_teardown: list[str], voyado_buffer: vt.TrackingBuffer
) -> None:
    voyado_buffer.enqueue(view("SKU-late"))
    delivered_after_teardown.append("SKU-late")
    assert voyado_buffer.stats.sent == 0  # nothing waited for it: the teardown delivers it


class TestOverridingFlushSettings:
    @pytest.fixture
    def voyado_flush_settings(self) -> vt.FlushSettings:
        return vt.FlushSettings(max_batch_size=2, flush_interval=60.0)

    async def test_overriding_voyado_flush_settings_configures_voyado_buffer(
        self, voyado_buffer: vt.TrackingBuffer
    ) -> None:
        assert voyado_buffer.settings.max_batch_size == 2
        assert voyado_buffer.settings.flush_interval == 60.0


def run_pytest(tmp_path: Path, test_source: str, *options: str,
               python_prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run pytest on *test_source* in a fresh directory, as a user's project would."""
    (tmp_path / "test_user.py").write_text(test_source)
    code = f"{python_prelude}import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", *options, "test_user.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )


def test_fixtures_work_in_pytest_asyncio_strict_mode(tmp_path: Path) -> None:
    source = '''
import pytest
import voyado_tracking as vt

@pytest.mark.asyncio
async def test_it(voyado_buffer, voyado_fake):
    voyado_buffer.enqueue(vt.ProductView("SKU-1", "3fa85f64-5717-4562-b3fc-2c963f66afa6"))
    await voyado_buffer.flush()
    assert len(voyado_fake.product_views) == 1
'''
    result = run_pytest(tmp_path, source, "-o", "asyncio_mode=strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_without_pytest_asyncio_the_fixtures_say_what_to_install(tmp_path: Path) -> None:
    # A package of the same name first on sys.path, whose import fails: as if not installed.
    shadow = tmp_path / "shadow" / "pytest_asyncio"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pytest_asyncio is not installed')\n")
    source = "def test_it(voyado_fake):\n    pass\n"
    result = run_pytest(
        tmp_path, source, "-p", "no:asyncio",
        python_prelude=f"import sys; sys.path.insert(0, {str(shadow.parent)!r})\n",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "needs pytest-asyncio" in result.stdout


def test_the_readme_plugin_example_passes_under_pytest(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    examples = [b for b in blocks if "voyado_buffer" in b and "def test_" in b]
    assert examples, "README.md has no pytest example using the voyado_buffer fixture"
    for example in examples:
        result = run_pytest(tmp_path, example, "-o", "asyncio_mode=auto")
        assert result.returncode == 0, result.stdout + result.stderr
        assert " passed" in result.stdout
