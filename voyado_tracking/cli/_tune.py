"""``voyado-tracking tune``: flush settings for a shop's traffic, simulated in virtual time.

Prints a table of every setting swept (fleet requests/s, delivery delay, collapsed cart
updates, peak pending events and memory per worker) and the recommended ``FlushSettings``
with the reason (exit 0), or which limit no setting meets and what would (exit 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import attrs

from .._tune import Limits, Outcome, Traffic, reason, recommend, settings_text, sweep, unmet
from ._common import EXIT_FAILED, EXIT_OK

__all__ = ["run_tune", "table"]

_COLUMNS = (
    "batch", "interval", "fleet req/s", "delay p50", "p99", "max", "collapsed",
    "peak pending", "memory", "limits",
)


def run_tune(args: argparse.Namespace) -> int:
    traffic = Traffic(events_per_second=args.events_per_second, cart_share=args.cart_share,
                      carts=args.carts, workers=args.workers, seed=args.seed)
    limits = Limits(max_delay=args.max_delay,
                    max_requests_per_second=args.max_requests_per_second)
    outcomes = sweep(traffic, service_time=args.request_time)
    chosen = recommend(outcomes, limits)
    print(_heading(traffic, args.request_time, outcomes))
    print()
    print(table(outcomes, limits, chosen))
    print()
    if chosen is not None:
        print(f"Recommended: {settings_text(chosen)}")
        print(f"Why: {reason(chosen, limits)}")
        return EXIT_OK
    fleet = None
    if traffic.workers > 1:
        fleet = sweep(attrs.evolve(traffic, workers=1), service_time=args.request_time)
    print("No setting meets the limits.")
    print(unmet(outcomes, limits, fleet, args.request_time))
    return EXIT_FAILED


def _heading(traffic: Traffic, request_time: float, outcomes: Sequence[Outcome]) -> str:
    workers = traffic.workers
    seconds = sorted({o.duration for o in outcomes})
    span = f"{seconds[0]:g} s" if len(seconds) == 1 else f"{seconds[0]:g}-{seconds[-1]:g} s"
    return (
        f"Traffic: {traffic.events_per_second:,g} events/s, {traffic.cart_share:.0%} cart "
        f"updates over {traffic.active_carts:,} active carts, on {workers} "
        f"worker{'s' if workers > 1 else ''}; requests take {request_time:g} s.\n"
        f"Simulated in virtual time through the buffer's own store, {span} of traffic per "
        "setting. Delay: enqueue to 2xx. Peak pending and memory are per worker "
        "(about 800 bytes per event)."
    )


def table(outcomes: Sequence[Outcome], limits: Limits, chosen: Outcome | None) -> str:
    """A markdown table of *outcomes*, the recommended one marked."""
    rows = [_COLUMNS]
    for o in outcomes:
        problems = limits.problems(o)
        verdict = ", ".join(problems) if problems else "ok"
        if o is chosen:
            verdict = "recommended"
        rows.append((
            str(o.settings.max_batch_size), f"{o.settings.flush_interval:g} s",
            f"{o.requests_per_second:.1f}", _seconds(o.delay_p50), _seconds(o.delay_p99),
            _seconds(o.delay_max), f"{o.collapsed:,} ({o.collapsed_share:.0%})",
            f"{o.peak_pending:,}", _megabytes(o.memory_bytes), verdict,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [_line(rows[0], widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines.extend(_line(row, widths) for row in rows[1:])
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
