"""The flush-settings trade-off, measured by the simulation behind ``voyado-tracking tune``.

    python benchmarks/tradeoffs.py                 # markdown table + benchmarks/tradeoffs.png
    python benchmarks/tradeoffs.py --no-png        # the table only (no matplotlib needed)

For 50, 500 and 5,000 events/s (30% cart updates, one worker, requests taking 0.05 s) and
batch sizes 100 and 500, it sweeps ``flush_interval`` through the buffer's own
``PendingStore`` in virtual time and reports requests/s and the p99 delivery delay (enqueue
to 2xx). The plot needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from voyado_tracking._tune import Outcome, Traffic, sweep

HERE = Path(__file__).resolve().parent
RATES = (50, 500, 5_000)
BATCH_SIZES = (100, 500)
INTERVALS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def measure() -> dict[int, list[Outcome]]:
    return {
        rate: sweep(Traffic(events_per_second=rate), batch_sizes=BATCH_SIZES,
                    flush_intervals=INTERVALS)
        for rate in RATES
    }


def table(results: dict[int, list[Outcome]]) -> str:
    head = ["events/s", "flush_interval"]
    for size in BATCH_SIZES:
        head += [f"req/s ({size})", f"p99 delay ({size})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rate, outcomes in results.items():
        by = {(o.settings.max_batch_size, o.settings.flush_interval): o for o in outcomes}
        for interval in INTERVALS:
            cells = [f"{rate:,}", f"{interval:g} s"]
            for size in BATCH_SIZES:
                o = by[size, interval]
                mark = "" if o.keeps_up else " *"
                cells += [f"{o.requests_per_second:.2f}{mark}", f"{o.delay_p99:.2f} s{mark}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("\\* saturated: the connections (2, 0.05 s a request) cannot keep up, so a "
                 "backlog grows and the delay grows with the length of the run.")
    return "\n".join(lines)


def plot(results: dict[int, list[Outcome]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rps, delay) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    colours = dict(zip(RATES, ("tab:green", "tab:blue", "tab:red"), strict=True))
    for rate, outcomes in results.items():
        for size, style in zip(BATCH_SIZES, ("--", "-"), strict=True):
            mine = [o for o in outcomes if o.settings.max_batch_size == size]
            x = [o.settings.flush_interval for o in mine]
            label = f"{rate:,} events/s, batch {size}"
            rps.plot(x, [o.requests_per_second for o in mine], style, marker="o",
                     markersize=3, color=colours[rate], label=label)
            delay.plot(x, [o.delay_p99 for o in mine], style, marker="o", markersize=3,
                       color=colours[rate], label=label)
    for axes, title in ((rps, "requests/s"), (delay, "p99 delivery delay (s)")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xticks(INTERVALS, [f"{i:g}" for i in INTERVALS])
        axes.minorticks_off()
        axes.set_xlabel("flush_interval (s)")
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
    rps.axhline(40, color="grey", linewidth=0.8)
    rps.annotate("40/s: the client's default budget", (0.5, 40), fontsize=7,
                 xytext=(0, 3), textcoords="offset points")
    delay.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, default=HERE / "tradeoffs.png")
    parser.add_argument("--no-png", action="store_true", help="print the table only")
    args = parser.parse_args()
    results = measure()
    print(table(results))
    if not args.no_png:
        plot(results, args.png)
        print(f"\nplot written to {args.png.name}")


if __name__ == "__main__":
    main()
