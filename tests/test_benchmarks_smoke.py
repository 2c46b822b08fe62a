"""The benchmark scripts keep working: one tiny run, checked for its table, never its numbers.

Timings belong in ``benchmarks/``; this test asserts no speed. Libraries of the ``bench`` extra
that are not installed show up as "n/a" rows, which is fine here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

ROWS = [
    "caller cost, µs/call: `enqueue()` of a pre-built event",
    "caller cost, µs/call: build `ProductView` + `enqueue()`",
    "caller cost, µs/call: `Tracker.enqueue()` (sync facade) of a pre-built event",
    "delivered events/s (events built in the loop)",
    "delivered events/s (pre-built events)",
    "memory per buffered product view, bytes (RSS)",
    "single awaited `register_product_view`, ms (median)",
    "event-loop lag while flushing, max ms",
    "cart collapse: requests sent",
    "cart collapse: cart updates sent",
    "journal on: caller cost, µs/call, `enqueue()` of a pre-built event",
    "journal on: delivered events/s (events built in the loop)",
    "journal recovery (10 N views): first batch sent, s after start",
    "journal recovery (10 N views): delivered events/s",
    "journal recovery (10 N views): peak events held",
    "journal: bytes on disk per pending view",
]


def test_benchmark_run_prints_the_table_with_every_scenario() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--n", "200", "--rounds", "1",
         "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "| measurement | voyado_tracking | compared with | ratio | target | result |" in out
    for row in ROWS:
        # Our own side always runs: a row of ours reading "n/a" means a broken script.
        line = next((x for x in out.splitlines() if x.startswith(f"| {row} |")), None)
        assert line is not None, f"missing row {row!r} in:\n{out}"
        assert not line.split(" | ")[1].startswith("n/a"), line
    for mix in ("views", "carts", "mixed"):
        # The in-app scenario: both apps ran and were compared.
        assert f"| {mix} | tracking |" in out, out[-3000:]


def test_tradeoffs_script_prints_the_table_for_every_rate() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "tradeoffs.py"), "--no-png"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| events/s | flush_interval | req/s (100) | p99 delay (100) |" in done.stdout
    for rate in ("| 50 |", "| 500 |", "| 5,000 |"):
        assert rate in done.stdout


def test_identify_benchmark_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "identify.py"), "--rounds", "1", "--calls", "200"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("`identify()`, cookie path, µs/call", "`decode_eclub()`, µs/call"):
        assert f"| {row} |" in done.stdout, done.stdout


def test_journal_burst_script_prints_both_sides_and_the_verdict() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "journal_burst.py"), "--sizes", "200",
         "--rounds", "1", "--timeout", "60"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 200 |")]
    assert [row.split(" | ")[1] for row in rows] == ["off", "on"], done.stdout
    assert "n/a" not in rows[1], rows[1]
