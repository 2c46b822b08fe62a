"""``Tracker.enqueue`` caller cost, side by side with Segment's ``track()`` and PostHog's
``capture()``, all three pointed at loopback and delivering while the caller runs.

    .venv/bin/python benchmarks/tracker.py [--n N] [--rounds R]

The tracker's trial (``scenarios.py tracker voyado-tracker``, also run by ``run.py``): a
``FakeVoyado`` in its own process (``voyado-tracking fake-server``), a ``vt.Tracker`` built in
the trial, N pre-built product views enqueued from the main thread in one loop, timed as a
whole: the mean over N calls, while the tracker's own thread moves them into its buffer and
delivers them (both compete for the GIL: that is part of the cost a WSGI worker sees).
``max_pending`` is above N, so nothing is dropped; the trial checks that the fake received
every event. Segment's and PostHog's are the ``caller`` trials of ``scenarios.py`` (their
defaults, a queue big enough not to drop, the run's loopback sink).

Run alone, this script runs the three trials interleaved in R rounds (fresh interpreters, one
sink) and prints a markdown table of medians with their range and the ratios; target:
at most 1/10 of Segment's ``track()``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import build_view, raw_views

TRIAL = ("tracker", "voyado-tracker")


def _fake_server() -> tuple[subprocess.Popen[bytes], str, str]:
    process = subprocess.Popen([sys.executable, "-m", "voyado_tracking", "fake-server"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    settings = dict(part.split("=", 1) for part in line.split())
    return process, settings["VOYADO_BASE_URL"], settings["VOYADO_API_KEY"]


def _received(base_url: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/_fake/state", timeout=30) as response:
        return len(json.loads(response.read())["productViews"])


def caller_tracker(sink: str, n: int) -> dict[str, Any]:
    """Mean µs per ``Tracker.enqueue`` over *n* calls (the run's *sink* is not used: the
    tracker delivers to a FakeVoyado of its own)."""
    import voyado_tracking as vt

    events = [build_view(raw) for raw in raw_views(n)]
    fake, base_url, api_key = _fake_server()
    try:
        settings = vt.FlushSettings(max_pending=n + 1000)
        tracker = vt.Tracker(base_url, api_key, settings=settings,
                             client_options={"max_requests_per_second": None})
        enqueue = tracker.enqueue
        enqueue(events[0])  # starts the thread: not part of the per-call cost
        perf = time.perf_counter
        t0 = perf()
        for event in events[1:]:
            enqueue(event)
        spent = perf() - t0
        tracker.flush(120)
        stats = tracker.stats
        tracker.close()
        received = _received(base_url)
    finally:
        fake.kill()
        fake.wait()
    assert stats.dropped == 0, stats
    assert received == n, (stats, received)
    return {"us_per_call": spent / (n - 1) * 1e6}


TRIALS = {TRIAL: caller_tracker}


def main() -> None:
    from run import Results, cell, run_trial, start_sink

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls per trial")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per trial")
    args = parser.parse_args()
    trials = [TRIAL, ("caller", "segment"), ("caller", "posthog")]
    results = Results()
    sink, url = start_sink()
    try:
        for round_ in range(1, args.rounds + 1):
            for scenario, lib in trials:
                result = run_trial(scenario, lib, args.n, url, args.timeout)
                results.add(scenario, lib, result)
                print(f"[round {round_}/{args.rounds}] {lib:<16} {result}", file=sys.stderr,
                      flush=True)
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(timeout=10)
    ours = results.samples(*TRIAL, "us_per_call")
    print(f"\n## Tracker.enqueue caller cost (N = {args.n:,}, {args.rounds} rounds)\n")
    print("| caller | µs/call (median, range) | Tracker.enqueue / this | target |")
    print("| --- | --- | --- | --- |")
    print(f"| `Tracker.enqueue()` | {cell(ours)} | — | — |")
    for lib, label, target in (("segment", "Segment `track()`", "≤ 0.1x"),
                               ("posthog", "PostHog `capture()`", "—")):
        theirs = results.samples("caller", lib, "us_per_call")
        ratio = "n/a"
        if not isinstance(ours, str) and not isinstance(theirs, str):
            value = statistics.median(ours) / statistics.median(theirs)
            ratio = f"{value:.3g}x"
            if target != "—":
                ratio += " PASS" if value <= 0.1 else " FAIL"
        print(f"| {label} | {cell(theirs)} | {ratio} | {target} |")


if __name__ == "__main__":
    main()
