"""What importing the library loads: a process that never journals never loads SQLite."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(done.stdout.split())


def test_a_forwarder_process_loads_neither_sqlite_nor_the_journal() -> None:
    pytest.importorskip("redis")
    modules = loaded_after("import voyado_tracking as vt; vt.Forwarder; vt.RedisOutbox")
    assert "sqlite3" not in modules
    assert not {m for m in modules if m.startswith("voyado_tracking._journal.")}


def test_a_buffer_without_a_journal_does_not_load_sqlite() -> None:
    modules = loaded_after(
        "import asyncio, voyado_tracking as vt\n"
        "async def main():\n"
        "    async with vt.TrackingClient('http://127.0.0.1:9', 'k') as client:\n"
        "        async with vt.TrackingBuffer(client) as buffer:\n"
        "            pass\n"
        "asyncio.run(main())"
    )
    assert "sqlite3" not in modules


def test_a_buffer_with_a_journal_loads_it(tmp_path: object) -> None:
    modules = loaded_after(
        "import asyncio, voyado_tracking as vt\n"
        "async def main():\n"
        "    async with vt.TrackingClient('http://127.0.0.1:9', 'k') as client:\n"
        f"        async with vt.TrackingBuffer(client, journal=vt.Journal({str(tmp_path)!r})):\n"
        "            pass\n"
        "asyncio.run(main())"
    )
    assert "sqlite3" in modules
