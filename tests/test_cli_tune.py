"""``voyado-tracking tune``: exit statuses and what it says (run in-process: it does no I/O)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from voyado_tracking.cli import main


def tune(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        status = main(["tune", *args])
    except SystemExit as exit_:  # argparse's usage errors
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_tune_prints_the_table_and_a_recommendation(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = tune(capsys, "--events-per-second", "2000")
    assert status == 0
    assert "| batch | interval | fleet req/s | delay p50 |" in out
    assert out.count("recommended |") == 1
    assert "Recommended: FlushSettings(max_batch_size=" in out
    assert "Why: the fewest requests" in out


def test_tune_exits_1_naming_the_requests_limit_it_cannot_meet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = tune(capsys, "--events-per-second", "2000",
                          "--max-requests-per-second", "2")
    assert status == 1
    assert "No setting meets the limits." in out
    assert "requests/s: no setting keeps the fleet under 2 requests/s" in out


def test_tune_exits_1_saying_which_longer_delay_would_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = tune(capsys, "--events-per-second", "20", "--max-delay", "0.2")
    assert status == 1
    assert "delay: no setting under 40 requests/s delivers within 0.2 s" in out
    assert "--max-delay 1 would allow it" in out


def test_tune_suggests_fleet_mode_when_many_workers_oversubscribe_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = tune(capsys, "--events-per-second", "200", "--workers", "400")
    assert status == 1
    assert "Fleet mode" in out
    assert "would meet the limits" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events-per-second", "-5"], "must be > 0"),
        (["--events-per-second", "lots"], "not a number of events per second: 'lots'"),
        (["--events-per-second", "1e9"], "at most 100,000"),
        (["--events-per-second", "100", "--cart-share", "1.5"], "must be between 0 and 1"),
        (["--events-per-second", "100", "--workers", "0"], "must be >= 1"),
        ([], "the following arguments are required: --events-per-second"),
    ],
)
def test_tune_rejects_bad_input_with_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = tune(capsys, *args)
    assert status == 2
    assert message in err
    assert out == ""


def test_tune_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voyado_tracking", "tune", "--events-per-second", "50"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Recommended: FlushSettings(" in done.stdout


def _recommended(out: str) -> tuple[float, float]:
    """The recommended flush_interval and the p99 delay of the Why line."""
    interval = re.search(r"Recommended: FlushSettings\(.*flush_interval=([\d.]+)", out)
    p99 = re.search(r"shortest p99 delay among them \(([\d.]+) s", out)
    assert interval is not None, out
    assert p99 is not None, out
    return float(interval.group(1)), float(p99.group(1))


def test_tune_recommends_only_settings_within_90_percent_of_the_delay_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """150 events/s on 4 workers: a 10 s interval has p99 9.96 s against 10 s; not that."""
    status, out, _ = tune(capsys, "--events-per-second", "150", "--workers", "4")
    assert status == 0
    interval, p99 = _recommended(out)
    assert p99 <= 0.9 * 10
    assert interval < 10


def test_tune_says_what_a_kill_9_loses_without_a_journal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Up to events/s / workers x flush_interval per worker, plus its pending carts."""
    status, out, _ = tune(capsys, "--events-per-second", "150", "--workers", "4")
    assert status == 0
    interval, _ = _recommended(out)
    per_worker = 150 / 4 * interval
    assert (f"A kill -9 without a journal loses what a worker holds: up to 37.5 events/s x "
            f"{interval:g} s = {per_worker:,.0f} events per worker, plus its pending carts"
            ) in out
