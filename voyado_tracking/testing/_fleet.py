"""Processes of a simulated fleet, for the fleet demo, the fleet tests and the benchmarks.

:class:`FleetWorkers` starts one process per :class:`WorkerPlan` (``python -m
voyado_tracking.testing._fleet``). A worker enqueues its plan's events, each at its offset
after the start, into a :class:`RedisOutbox` (or, given a ``base_url``, into a
:class:`TrackingBuffer` of its own, for comparison), then closes it. The workers are started
first and released together, so their traffic overlaps as a fleet's does.
:func:`start_forwarder_process` runs a :class:`Forwarder` in a process of its own (one a test
can kill) until SIGTERM.

A process gets its settings, the Redis URL included, on stdin (never on its command line):
one JSON line, then its events as JSON Lines. A worker answers ``ready`` on stdout, starts on
``go``, and prints its sink's counters as a JSON line every ``report_every`` seconds and once
more, with ``"final": true``, after the close. A forwarder prints ``started``, and its stats
when it stops.

Nothing here imports redis until a process uses it: it is an optional extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs

from .._eventfile import event_to_line, line_to_event
from .._wire import Event

__all__ = ["FleetWorkers", "WorkerPlan", "start_forwarder_process"]

_YIELD_EVERY = 64  # events between two turns of the loop when a worker is behind its schedule


@attrs.frozen(kw_only=True)
class WorkerPlan:
    """What one worker process does. ``due[i]`` is when to enqueue ``events[i]``, in seconds
    after the start (all at once when ``due`` is None)."""

    events: Sequence[Event]
    due: Sequence[float] | None = None
    redis: str | None = None
    stream: str = "voyado-tracking"  # the library's default stream
    max_pending: int | None = None
    base_url: str | None = None  # a TrackingBuffer to this Voyado instead of a RedisOutbox
    api_key: str | None = None
    flush_interval: float = 1.0  # of that TrackingBuffer
    report_every: float = 0.2

    def config(self) -> dict[str, Any]:
        values = attrs.asdict(self, filter=lambda field, _: field.name not in ("events", "due"))
        return {"role": "worker", **values, "count": len(self.events),
                "due": None if self.due is None else list(self.due)}


class FleetWorkers:
    """The worker processes of *plans*: started, released together, their counters read.

    ``async with FleetWorkers(plans) as workers: counters = await workers.play()``; leaving
    the block ends the workers still running (after an error or Ctrl-C).
    """

    def __init__(self, plans: Sequence[WorkerPlan]) -> None:
        self._plans = list(plans)
        self._procs: list[asyncio.subprocess.Process] = []
        self.latest: list[dict[str, Any]] = [{} for _ in self._plans]
        """Each worker's last counters (its sink's stats, and ``final``)."""

    async def __aenter__(self) -> FleetWorkers:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every worker and wait until each has its events; RuntimeError if one does
        not get there (its error is on stderr)."""
        # All started before any is fed: each reads its events only once its imports are done.
        self._procs = [await _spawn() for _ in self._plans]
        await asyncio.gather(*(_feed(proc, plan.config(), plan.events)
                               for proc, plan in zip(self._procs, self._plans, strict=True)))
        for proc in self._procs:
            assert proc.stdout is not None
            if await proc.stdout.readline() != b"ready\n":
                raise RuntimeError("a worker process of the fleet did not start")

    def enqueued(self) -> int:
        """Events the workers have enqueued so far."""
        return sum(latest.get("enqueued", 0) for latest in self.latest)

    async def play(self) -> list[int]:
        """Release the workers together; their exit statuses once all have exited (the final
        counters are in :attr:`latest`)."""
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        await asyncio.gather(*(self._follow(n) for n in range(len(self._procs))))
        return [await proc.wait() for proc in self._procs]

    async def _follow(self, n: int) -> None:
        stdout = self._procs[n].stdout
        assert stdout is not None
        async for line in stdout:
            with contextlib.suppress(ValueError):
                self.latest[n] = json.loads(line)

    async def stop(self) -> None:
        """End the workers still running."""
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


async def start_forwarder_process(
    redis: str, base_url: str, api_key: str, *, rate: float, claim_idle: float = 60.0,
    max_batch_size: int = 500, flush_interval: float = 1.0,
) -> asyncio.subprocess.Process:
    """A process running a Forwarder (sharing a RedisRateLimiter of *rate* requests/s) until
    SIGTERM; it prints ``started`` on its stdout (a pipe) once it runs."""
    config = {"role": "forwarder", "redis": redis, "base_url": base_url, "api_key": api_key,
              "rate": rate, "claim_idle": claim_idle, "max_batch_size": max_batch_size,
              "flush_interval": flush_interval}
    proc = await _spawn()
    await _feed(proc, config, ())
    return proc


async def _spawn() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )


async def _feed(
    proc: asyncio.subprocess.Process, config: dict[str, Any], events: Sequence[Event]
) -> None:
    """Write a process's settings and events to its stdin."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config).encode() + b"\n")
    proc.stdin.writelines(event_to_line(event) for event in events)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # it died: start() says
        await proc.stdin.drain()


# -- in the processes ------------------------------------------------------------------------


def _sink(config: dict[str, Any]) -> tuple[Any, Any]:
    """The worker's sink, and the client to close after it (None for an outbox)."""
    import voyado_tracking as vt

    if config["base_url"] is not None:
        client = vt.TrackingClient(config["base_url"], config["api_key"])
        settings = vt.FlushSettings(flush_interval=config["flush_interval"])
        return vt.TrackingBuffer(client, settings), client
    extra = {} if config["max_pending"] is None else {"max_pending": config["max_pending"]}
    return vt.RedisOutbox(config["redis"], stream=config["stream"], **extra), None


async def _work(config: dict[str, Any], events: Sequence[Event]) -> None:
    sink, client = _sink(config)
    due: Sequence[float] = config["due"] or [0.0] * len(events)

    def report(final: bool = False) -> None:
        print(json.dumps({**attrs.asdict(sink.stats), "final": final}), flush=True)

    async def keep_reporting() -> None:
        while True:
            await asyncio.sleep(config["report_every"])
            report()

    reporter = asyncio.get_running_loop().create_task(keep_reporting())
    try:
        async with sink:
            started = time.monotonic()
            for n, (event, at) in enumerate(zip(events, due, strict=True)):
                wait = started + at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                sink.enqueue(event)
    finally:
        reporter.cancel()
        if client is not None:
            await client.aclose()
    report(final=True)


async def _forward(config: dict[str, Any]) -> None:
    import voyado_tracking as vt

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    limiter = vt.RedisRateLimiter(config["redis"], rate=config["rate"])
    settings = vt.FlushSettings(max_batch_size=config["max_batch_size"],
                                flush_interval=config["flush_interval"])
    async with (
        vt.TrackingClient(config["base_url"], config["api_key"], rate_limiter=limiter) as client,
        vt.Forwarder(client, config["redis"], settings,
                     claim_idle=config["claim_idle"]) as forwarder,
    ):
        print("started", flush=True)
        await stop.wait()
        print(forwarder.stats, flush=True)
    await limiter.aclose()


def _main() -> int:
    config = json.loads(sys.stdin.readline())
    if config["role"] == "forwarder":
        asyncio.run(_forward(config))
        return 0
    events = [line_to_event(sys.stdin.readline()) for _ in range(config["count"])]
    print("ready", flush=True)
    if sys.stdin.readline() != "go\n":
        return 1  # the fleet stopped before the traffic began
    asyncio.run(_work(config, events))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
