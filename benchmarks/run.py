"""Run every benchmark, interleaved, against one loopback sink; print a markdown table.

    python benchmarks/run.py            # N=100k, 3 rounds (about 5-8 minutes on 2 cores)
    python benchmarks/run.py --quick    # N=10k, 2 rounds (under a minute)
    python benchmarks/run.py --baseline DIR   # ours only: DIR's source tree (before) vs this one

With ``--baseline``, every trial of ours runs twice per round, once importing the
``voyado_tracking`` of DIR (another checkout, e.g. ``git worktree add DIR <rev>``) and once this
one, interleaved, and the table compares after with before, with each side's spread.

The sink (``sink.py``) runs in its own process for the whole run. Each trial is a fresh
interpreter (``scenarios.py SCENARIO LIB``), and the trials of one round run one after the
other — ours, then Segment's, then PostHog's, ... — so machine noise hits every library alike.
Cells are medians over the rounds with their range (min to max); ratios are ratios of medians.
A library that cannot be imported or does not work shows "n/a" with the reason.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from _common import EN_DASH, fmt

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios.py"
SINK = HERE / "sink.py"
INAPP = HERE / "inapp.py"

# (scenario, library, how many events for it given N)
TRIALS: list[tuple[str, str, Callable[[int], int]]] = [
    ("caller", "voyado-enqueue", lambda n: n),
    ("caller", "voyado-enqueue-otel", lambda n: n),
    ("caller", "voyado-build-enqueue", lambda n: n),
    ("caller", "segment", lambda n: n),
    ("caller", "posthog", lambda n: n),
    ("tracker", "voyado-tracker", lambda n: n),
    ("throughput", "voyado", lambda n: n),
    ("throughput", "voyado-prebuilt", lambda n: n),
    ("throughput", "segment", lambda n: n),
    ("throughput", "posthog", lambda n: n),
    ("throughput", "raw", lambda n: n),
    ("throughput", "raw-serialising", lambda n: n),
    ("throughput", "sdk-batch", lambda n: n),
    ("throughput", "sdk-single", lambda n: max(50, n // 50)),
    ("memory", "voyado", lambda n: n),
    ("memory", "segment", lambda n: n),
    ("memory", "posthog", lambda n: n),
    ("latency", "voyado", lambda n: max(50, min(1000, n // 100))),
    ("latency", "sdk", lambda n: max(50, min(1000, n // 100))),
    ("looplag", "voyado", lambda n: n),
    ("collapse", "voyado", lambda n: n),
    ("journal", "enqueue-on", lambda n: n),
    ("journal", "throughput-on", lambda n: n),
    ("journal", "recovery", lambda n: 10 * n),
    ("journal", "recovery-off", lambda n: 10 * n),
]
PACKAGES = ["voyado-tracking", "aiohttp", "attrs", "cattrs", "orjson",
            "segment-analytics-python", "posthog", "voyado-engage-client", "requests", "psutil"]


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    sink = subprocess.Popen([sys.executable, str(SINK)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert sink.stdout is not None
    line = sink.stdout.readline().decode()
    if not line.startswith("PORT "):
        sink.kill()
        raise SystemExit(f"the sink did not start: {line!r}")
    return sink, f"http://127.0.0.1:{int(line.split()[1])}"


def run_trial(
    scenario: str, lib: str, n: int, sink: str, timeout: float, source: str | None = None
) -> dict[str, Any]:
    command = [sys.executable, str(SCENARIOS), scenario, lib, "--n", str(n), "--sink", sink]
    env = None
    if source is not None:  # import voyado_tracking from another source tree
        env = {**os.environ, "PYTHONPATH": source}
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(done.stdout.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = orjson.loads(line)
            return result
    tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {done.returncode}: {tail[0][:160]}"}


class Results:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def add(self, scenario: str, lib: str, result: dict[str, Any]) -> None:
        self.values.setdefault((scenario, lib), []).append(result)

    def samples(self, scenario: str, lib: str, key: str) -> list[float] | str:
        """The numbers measured, or the reason there are none."""
        runs = self.values.get((scenario, lib), [])
        numbers = [r[key] for r in runs if key in r]
        if numbers:
            return [float(x) for x in numbers]
        errors = [r["error"] for r in runs if "error" in r]
        return errors[0] if errors else "not run"


def cell(samples: list[float] | str) -> str:
    if isinstance(samples, str):
        return f"n/a ({samples})"
    middle = statistics.median(samples)
    if len(samples) == 1:
        return fmt(middle)
    return f"{fmt(middle)} ({fmt(min(samples))}{EN_DASH}{fmt(max(samples))})"


def table(results: Results) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = []

    def compare(metric: str, ours: tuple[str, str, str], theirs: tuple[str, str, str] | None,
                label: str, ratio_of: str, target: float | None, higher_is_better: bool) -> None:
        mine = results.samples(*ours)
        other = results.samples(*theirs) if theirs else "—"
        ratio_text, verdict = "—", ""
        other_cell = "—" if theirs is None else f"{label}: {cell(other)}"
        if not isinstance(mine, str) and theirs is not None and not isinstance(other, str):
            a, b = statistics.median(mine), statistics.median(other)
            ratio = a / b if ratio_of == "ours/theirs" else b / a
            ratio_text = f"{ratio:.3g}x" if ratio >= 0.01 else f"{ratio:.2g}x"
            if target is not None:
                ok = ratio >= target if higher_is_better else ratio <= target
                verdict = "PASS" if ok else "FAIL"
        target_text = "—" if target is None else (
            f"≥ {target:g}x" if higher_is_better else f"≤ {target:g}x")
        if target is not None and not verdict:
            verdict = "n/a"
        rows.append((metric, cell(mine), other_cell, ratio_text, target_text, verdict))

    def absolute(metric: str, ours: tuple[str, str, str], target: float | None,
                 note: str = "—") -> None:
        mine = results.samples(*ours)
        verdict = ""
        if target is not None:
            verdict = "n/a" if isinstance(mine, str) else (
                "PASS" if statistics.median(mine) <= target else "FAIL")
        target_text = "—" if target is None else f"≤ {fmt(target)}"
        rows.append((metric, cell(mine), note, "—", target_text, verdict))

    enqueue = ("caller", "voyado-enqueue", "us_per_call")
    build = ("caller", "voyado-build-enqueue", "us_per_call")
    compare("caller cost, µs/call: `enqueue()` of a pre-built event", enqueue,
            ("caller", "segment", "us_per_call"), "Segment `track()`", "ours/theirs", 0.1, False)
    compare("caller cost, µs/call: `enqueue()` of a pre-built event", enqueue,
            ("caller", "posthog", "us_per_call"), "PostHog `capture()`", "ours/theirs", None,
            False)
    compare("caller cost, µs/call: build `ProductView` + `enqueue()`", build,
            ("caller", "segment", "us_per_call"), "Segment `track()`", "ours/theirs", 0.2, False)
    tracker = ("tracker", "voyado-tracker", "us_per_call")
    for lib, label, target in (("segment", "Segment `track()`", 0.1),
                               ("posthog", "PostHog `capture()`", None)):
        compare("caller cost, µs/call: `Tracker.enqueue()` (sync facade) of a pre-built event",
                tracker, ("caller", lib, "us_per_call"), label, "ours/theirs", target, False)
    for variant, what in (("voyado", "events built in the loop"),
                          ("voyado-prebuilt", "pre-built events")):
        ours = ("throughput", variant, "events_per_s")
        metric = f"delivered events/s ({what})"
        compare(metric, ours, ("throughput", "segment", "events_per_s"), "Segment",
                "ours/theirs", 7, True)
        compare(metric, ours, ("throughput", "raw", "events_per_s"),
                "raw aiohttp+orjson floor", "ours/theirs", 0.5, True)
    compare("delivered events/s (pre-built events)", ("throughput", "voyado-prebuilt",
            "events_per_s"), ("throughput", "raw-serialising", "events_per_s"),
            "raw floor serialising each batch as it goes", "ours/theirs", None, True)
    ours = ("throughput", "voyado", "events_per_s")
    metric = "delivered events/s (events built in the loop)"
    compare(metric, ours, ("throughput", "posthog", "events_per_s"), "PostHog", "ours/theirs",
            None, True)
    compare(metric, ours, ("throughput", "sdk-batch", "events_per_s"),
            "generated SDK, batches of 500", "ours/theirs", None, True)
    compare(metric, ours, ("throughput", "sdk-single", "events_per_s"),
            "generated SDK, single calls (N/50, extrapolated)", "ours/theirs", None, True)
    absolute("memory per buffered product view, bytes (RSS)", ("memory", "voyado",
             "bytes_per_event"), 800)
    compare("memory per buffered product view, bytes (RSS)",
            ("memory", "voyado", "bytes_per_event"),
            ("memory", "segment", "bytes_per_event"), "Segment queue", "ours/theirs", None,
            False)
    compare("memory per buffered product view, bytes (RSS)",
            ("memory", "voyado", "bytes_per_event"),
            ("memory", "posthog", "bytes_per_event"), "PostHog queue", "ours/theirs", None,
            False)
    compare("single awaited `register_product_view`, ms (median)",
            ("latency", "voyado", "ms"), ("latency", "sdk", "ms"),
            "generated SDK single call", "theirs/ours (x faster)", 4, True)
    absolute("event-loop lag while flushing, p50 ms", ("looplag", "voyado", "p50_ms"), None)
    absolute("event-loop lag while flushing, p99 ms", ("looplag", "voyado", "p99_ms"), None)
    absolute("event-loop lag while flushing, max ms", ("looplag", "voyado", "max_ms"), 5.0,
             f"same ticker on an idle loop (noise floor): "
             f"{cell(results.samples('looplag', 'voyado', 'idle_max_ms'))}")
    absolute("cart collapse: requests sent", ("collapse", "voyado", "requests"), None,
             "simulated shoppers' cart updates, default settings")
    absolute("cart collapse: cart updates sent", ("collapse", "voyado", "sent"), None,
             "the rest collapsed (only the latest `time` per cart matters)")

    journal_rows(results, compare, absolute)
    rows.append(instrumented_row(results))
    lines = [
        "| measurement | voyado_tracking | compared with | ratio | target | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def instrumented_row(results: Results) -> tuple[str, str, str, str, str, str]:
    """``enqueue()`` with ``vt.instrument()`` on against off: the gap of the medians must be
    within max(0.2 µs, the plain runs' spread), over at least 5 interleaved pairs."""
    on = results.samples("caller", "voyado-enqueue-otel", "us_per_call")
    off = results.samples("caller", "voyado-enqueue", "us_per_call")
    metric = "instrumented (`vt.instrument`, OTel SDK): caller cost, µs/call, `enqueue()`"
    if isinstance(on, str) or isinstance(off, str):
        return (metric, cell(on), f"not instrumented: {cell(off)}", "—", "—", "n/a")
    gap = statistics.median(on) - statistics.median(off)
    bound = max(0.2, max(off) - min(off))
    verdict = "PASS" if abs(gap) <= bound else "FAIL"
    if min(len(on), len(off)) < 5:
        verdict = "n/a (fewer than 5 pairs)"
    return (metric, cell(on), f"not instrumented: {cell(off)}", f"gap {gap:+.3f} µs",
            f"gap within ±{bound:.2f} µs (max(0.2, plain spread))", verdict)


def journal_rows(results: Results, compare: Callable[..., None],
                 absolute: Callable[..., None]) -> None:
    """The journal's rows: journal on against off, and recovery of 10 N journaled views."""
    compare("journal on: caller cost, µs/call, `enqueue()` of a pre-built event",
            ("journal", "enqueue-on", "us_per_call"), ("caller", "voyado-enqueue", "us_per_call"),
            "journal off", "ours/theirs", 1.5, False)
    compare("journal on: delivered events/s (events built in the loop)",
            ("journal", "throughput-on", "events_per_s"), ("throughput", "voyado", "events_per_s"),
            "journal off", "ours/theirs", 0.5, True)
    absolute("journal recovery (10 N views): first batch sent, s after start",
             ("journal", "recovery", "first_batch_s"), 1.0)
    compare("journal recovery (10 N views): delivered events/s",
            ("journal", "recovery", "events_per_s"), ("journal", "recovery-off", "events_per_s"),
            "journal off, the same views built and `put()`", "ours/theirs", 0.5, True)
    absolute("journal recovery (10 N views): peak events held",
             ("journal", "recovery", "peak_held"), 10_000, "max_pending = 10,000 (default)")
    absolute("journal recovery (10 N views): peak RSS growth, MB",
             ("journal", "recovery", "peak_rss_mb"), None)
    absolute("journal: bytes on disk per pending view", ("journal", "recovery", "bytes_per_view"),
             None, "SQLite file after a checkpoint, divided by the views it holds")


# (metric, scenario, lib, key, higher is better)
OURS: list[tuple[str, str, str, str, bool]] = [
    ("caller cost of `enqueue()`, µs", "caller", "voyado-enqueue", "us_per_call", False),
    ("caller cost of build + `enqueue()`, µs", "caller", "voyado-build-enqueue", "us_per_call",
     False),
    ("caller cost of `Tracker.enqueue()`, µs", "tracker", "voyado-tracker", "us_per_call",
     False),
    ("delivered events/s, built in the loop", "throughput", "voyado", "events_per_s", True),
    ("delivered events/s, pre-built", "throughput", "voyado-prebuilt", "events_per_s", True),
    ("memory per buffered view, bytes", "memory", "voyado", "bytes_per_event", False),
    ("single awaited call, ms", "latency", "voyado", "ms", False),
    ("event-loop lag while flushing, max ms", "looplag", "voyado", "max_ms", False),
    ("journal on: caller cost of `enqueue()`, µs", "journal", "enqueue-on", "us_per_call", False),
    ("journal on: delivered events/s, built in the loop", "journal", "throughput-on",
     "events_per_s", True),
    ("journal recovery (10 N views): delivered events/s", "journal", "recovery", "events_per_s",
     True),
]
# Journal on against off, within one tree: (metric, on, off, higher is better, target).
JOURNAL_RATIOS: list[tuple[str, tuple[str, str, str], tuple[str, str, str], float]] = [
    ("journal on/off: caller cost of `enqueue()`", ("journal", "enqueue-on", "us_per_call"),
     ("caller", "voyado-enqueue", "us_per_call"), 1.5),
    ("journal on/off: delivered events/s", ("journal", "throughput-on", "events_per_s"),
     ("throughput", "voyado", "events_per_s"), 0.5),
]


def spread(samples: list[float]) -> float:
    """The rounds' spread: (max - min) / median."""
    return (max(samples) - min(samples)) / statistics.median(samples)


def baseline_table(results: Results) -> str:
    """After (this tree) against before (the baseline), each with its spread."""
    lines = [
        "| measurement | before | after | after/before | spread (larger side) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for metric, scenario, lib, key, higher in OURS:
        before = results.samples(scenario, f"before:{lib}", key)
        after = results.samples(scenario, lib, key)
        ratio_text, spread_text, verdict = "—", "—", "n/a"
        if not isinstance(before, str) and not isinstance(after, str):
            ratio = statistics.median(after) / statistics.median(before)
            worst = max(spread(before), spread(after))
            worse_by = (1 / ratio - 1) if higher else (ratio - 1)
            ratio_text, spread_text = f"{ratio:.3g}x", f"{worst:.0%}"
            verdict = "worse beyond spread" if worse_by > worst else "within spread or better"
        lines.append(f"| {metric} | {cell(before)} | {cell(after)} | {ratio_text} | "
                     f"{spread_text} | {verdict} |")
    lines += ["", "| ratio (medians; per-round range) | before | after | target |",
              "| --- | --- | --- | --- |"]
    for metric, on, off, target in JOURNAL_RATIOS:
        cells = [_round_ratios(results, on, off, prefix) for prefix in ("before:", "")]
        bound = f"≤ {target:g}x" if on[2] == "us_per_call" else f"≥ {target:g}x"
        lines.append(f"| {metric} | {cells[0]} | {cells[1]} | {bound} |")
    return "\n".join(lines)


def _round_ratios(results: Results, on: tuple[str, str, str], off: tuple[str, str, str],
                  prefix: str) -> str:
    """on/off as a ratio of medians, with the range of the per-round ratios."""
    a = results.samples(on[0], prefix + on[1], on[2])
    b = results.samples(off[0], prefix + off[1], off[2])
    if isinstance(a, str) or isinstance(b, str):
        return "n/a"
    ratio = statistics.median(a) / statistics.median(b)
    rounds = [x / y for x, y in zip(a, b, strict=False)]
    return f"{ratio:.3g}x ({min(rounds):.3g}{EN_DASH}{max(rounds):.3g})"


def machine_facts(n: int, rounds: int) -> str:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "\n".join([
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- {', '.join(versions)}",
        f"- N = {n:,} events per trial, {rounds} interleaved round(s); Voyado client with "
        "`max_requests_per_second=None` except in the cart-collapse trial (defaults)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=10k, 2 rounds")
    parser.add_argument("--n", type=int, help="events per trial (default 100000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--only", help="comma-separated scenarios (caller, throughput, "
                        "memory, latency, looplag, collapse, journal, tracker, inapp)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per trial")
    parser.add_argument("--baseline", metavar="DIR",
                        help="compare ours with the voyado_tracking source tree in DIR")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 3)
    only = set(args.only.split(",")) if args.only else None
    trials: list[tuple[str, str, Callable[[int], int], str | None]] = [
        (scenario, lib, count, None) for scenario, lib, count in TRIALS
        if only is None or scenario in only
    ]
    if args.baseline:
        source = str(Path(args.baseline).resolve())
        compared = {(scenario, lib) for _, scenario, lib, _, _ in OURS}
        ours = [(s, lib, c, None) for s, lib, c, _ in trials if (s, lib) in compared]
        trials = [t for trial in ours for t in ((*trial[:3], source), trial)]

    sink, url = start_sink()
    results = Results()
    started = time.monotonic()
    try:
        for round_ in range(1, rounds + 1):
            for scenario, lib, count, source in trials:
                t0 = time.monotonic()
                result = run_trial(scenario, lib, count(n), url, args.timeout, source)
                if source is not None:
                    lib = f"before:{lib}"
                results.add(scenario, lib, result)
                print(f"[round {round_}/{rounds}] {scenario:<10} {lib:<22} "
                      f"{time.monotonic() - t0:5.1f} s  {orjson.dumps(result).decode()[:120]}",
                      file=sys.stderr, flush=True)
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()
    print(f"\n## Results ({time.monotonic() - started:.0f} s)\n")
    print(machine_facts(n, rounds))
    print()
    print(baseline_table(results) if args.baseline else table(results))
    if only is None or "inapp" in only:
        print(run_inapp(n, args.baseline, args.timeout))


def run_inapp(n: int, baseline: str | None, timeout: float) -> str:
    """The in-app scenario (``inapp.py``, its own processes and sink): its markdown section.

    N = 100k runs it in full (20 rounds of 1,000-request slices per mix); a smaller N scales
    the slices and rounds down (``--quick`` gives 6 rounds of 500).
    """
    command = [sys.executable, str(INAPP)]
    if n < 100_000:
        command += ["--slice", str(max(100, min(500, n // 20))),
                    "--rounds", str(max(2, min(6, n // 1000)))]
    if baseline:
        command += ["--baseline", baseline]
    try:
        done = subprocess.run(command, capture_output=True, timeout=3 * timeout, text=True)
    except subprocess.TimeoutExpired:
        return "\n## In-app tracking cost\n\nn/a (timed out)"
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"\n## In-app tracking cost\n\nn/a (exit {done.returncode}: {tail[0][:160]})"
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("{"))


if __name__ == "__main__":
    main()
