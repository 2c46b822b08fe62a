"""``voyado-tracking tune``: flush settings for a shop's traffic, simulated in virtual time.

Prints a table of every setting swept (fleet requests/s, delivery delay, collapsed cart
updates, peak pending events and memory per worker) and the recommended ``FlushSettings``
with the reason (exit 0), or which limit no setting meets and what would (exit 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    Commands,
    bounded_float,
    positive_int,
    probability,
    seconds,
)

if TYPE_CHECKING:
    from .._tune import Limits, Outcome, Traffic

__all__ = ["MAX_TUNE_RATE", "add_tune", "kill_loss", "run_tune", "table"]

MAX_TUNE_RATE = 100_000

_COLUMNS = (
    "batch", "interval", "fleet req/s", "delay p50", "p99", "max", "collapsed",
    "peak pending", "memory", "limits",
)


_events_per_second = bounded_float(
    "a number of events per second", lambda v: 0 < v <= MAX_TUNE_RATE,
    f"> 0 and at most {MAX_TUNE_RATE:,} (more never fits one API key's budget)",
)
_requests_per_second = bounded_float(
    "a number of requests per second", lambda v: 0 < v < float("inf"), "> 0"
)


def add_tune(commands: Commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="recommend flush settings for your traffic (simulated, in virtual time)",
        description="Simulate your traffic through the buffer's own pending store in "
        "virtual time (seconds of wall time), sweep max_batch_size and flush_interval, and "
        "print requests/s for the whole fleet, delivery delay (p50/p99/max), collapsed cart "
        "updates, peak pending events and memory, and the recommended FlushSettings.",
        epilog="Exit status: 0 a setting meets the limits (recommended), 1 none does (the "
        "output says which limit and what would meet it), 2 usage error.",
    )
    tune.add_argument("--events-per-second", type=_events_per_second, required=True,
                      metavar="R", help="events/s of the whole shop (all workers together)")
    tune.add_argument("--cart-share", type=probability, default=0.3, metavar="F",
                      help="share of the events that are cart updates (default 0.3)")
    tune.add_argument("--carts", type=positive_int, default=None, metavar="N",
                      help="active carts the updates spread over (default: each cart "
                      "updated about every 30 s)")
    tune.add_argument("--workers", type=positive_int, default=1, metavar="W",
                      help="processes, each with its own buffer, sharing the traffic "
                      "(default 1)")
    tune.add_argument("--max-delay", type=seconds, default=10.0, metavar="S",
                      help="p99 delivery delay allowed, in seconds (default 10)")
    tune.add_argument("--max-requests-per-second", type=_requests_per_second, default=40.0,
                      metavar="Q", help="the whole fleet's budget for the API key "
                      "(default 40; Voyado asks for under 50)")
    tune.add_argument("--request-time", type=seconds, default=0.05, metavar="SECONDS",
                      help="how long one request takes, Voyado's answer included "
                      "(default 0.05)")
    tune.add_argument("--seed", type=int, default=0, help="random seed of the traffic")


def run_tune(args: argparse.Namespace) -> int:
    # Imported here, so that building the parser does not load the simulator.
    from .._tune import Limits, Traffic, reason, recommend, settings_text, sweep, unmet

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
        print(kill_loss(traffic, chosen))
        return EXIT_OK
    fleet = None
    if traffic.workers > 1:
        fleet = sweep(attrs.evolve(traffic, workers=1), service_time=args.request_time)
    print("No setting meets the limits.")
    print(unmet(outcomes, limits, fleet, args.request_time))
    return EXIT_FAILED


def kill_loss(traffic: Traffic, chosen: Outcome) -> str:
    """What a ``kill -9`` of one worker loses without a journal at the *chosen* setting."""
    per_worker = traffic.events_per_second / traffic.workers
    interval = chosen.settings.flush_interval
    return (
        f"A kill -9 without a journal loses what a worker holds: up to "
        f"{per_worker:,.4g} events/s x {interval:g} s = {per_worker * interval:,.0f} events "
        f"per worker, plus its pending carts (at most {chosen.peak_pending_carts:,} in the "
        f"simulation). A vt.Journal keeps what it committed."
    )


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
