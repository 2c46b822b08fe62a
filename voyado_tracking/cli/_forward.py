"""``voyado-tracking forward``: run a fleet-mode forwarder until SIGTERM or Ctrl-C.

Reads the stream that the fleet's ``RedisOutbox`` instances write, in a consumer group, and
delivers it to Voyado with a shared :class:`RedisRateLimiter` budget. Voyado's base URL and
API key come from ``VOYADO_BASE_URL`` and ``VOYADO_API_KEY``; the User-Agent from
``--user-agent`` or ``VOYADO_USER_AGENT``. ``--replay-dead`` moves the dead-letter stream
back for another try, and exits. ``--metrics-port`` serves ``/metrics`` and ``/healthz``
(``_metrics_server``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from .._client import TrackingClient
from .._settings import FlushSettings
from ._common import (
    EXIT_OK,
    Commands,
    UsageError,
    VoyadoEnvironment,
    per_second,
    positive_int,
    seconds,
    stop_on_signals,
    voyado_environment,
)
from ._metrics_server import MetricsServer, port_number

__all__ = ["add_forward", "run_forward"]


def _environment() -> VoyadoEnvironment:
    environment = voyado_environment()
    missing = [name for name, value in (("VOYADO_BASE_URL", environment.base_url),
                                        ("VOYADO_API_KEY", environment.api_key)) if not value]
    if missing:
        raise UsageError(f"set {' and '.join(missing)} in the environment")
    return environment


async def run_forward(args: argparse.Namespace) -> int:
    try:
        from ..redis import Forwarder, RedisRateLimiter
        from ..redis._stream import connect, replay_dead
    except ImportError as error:  # it names the extra to install
        raise UsageError(str(error)) from None

    if args.replay_dead:
        redis, _ = connect(args.redis)
        try:
            moved = await replay_dead(redis, args.stream)
        finally:
            await redis.aclose()
        print(f"moved {moved} dead entries back to {args.stream}", file=sys.stderr)
        return EXIT_OK
    environment = _environment()
    limiter = RedisRateLimiter(args.redis, rate=args.rate)
    try:
        client = TrackingClient(environment.base_url, environment.api_key,
                                user_agent=args.user_agent or environment.user_agent,
                                rate_limiter=limiter, max_batch_size=args.max_batch_size)
        settings = FlushSettings(flush_interval=args.flush_interval,
                                 max_batch_size=args.max_batch_size,
                                 shutdown_timeout=args.shutdown_timeout)
    except (TypeError, ValueError) as error:
        await limiter.aclose()
        raise UsageError(str(error)) from None  # never contains the key
    stop = asyncio.Event()
    async with client, Forwarder(
        client, args.redis, settings, stream=args.stream, group=args.group,
        consumer=args.consumer, claim_idle=args.claim_idle,
        stale_consumer_after=args.stale_consumer_after,
    ) as forwarder:
        print(f"forwarding {args.stream} (group {args.group}, consumer {forwarder.consumer})",
              file=sys.stderr, flush=True)
        metrics = await MetricsServer.start(forwarder, args.redis, args.metrics_host,
                                            args.metrics_port)
        with stop_on_signals(stop.set):
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.stats_interval)
                _print_stats(forwarder.stats)
        await metrics.aclose()
        print("stopping: delivering or releasing what this forwarder holds", file=sys.stderr)
    await limiter.aclose()
    _print_stats(forwarder.stats)
    return EXIT_OK


def _print_stats(stats: object) -> None:
    fields = ("sent", "requests", "retries", "dead_lettered", "claimed", "pending_carts",
              "pending_product_views", "in_flight", "spooled")
    print("stats " + " ".join(f"{name}={getattr(stats, name)}" for name in fields),
          file=sys.stderr, flush=True)


def add_forward(commands: Commands) -> None:
    forward = commands.add_parser(
        "forward",
        help="fleet mode: deliver a Redis stream written by RedisOutbox to Voyado",
        description="Run a Forwarder: read the stream in a consumer group, deliver full "
        "batches to Voyado under a rate budget shared through Redis, ack what was delivered. "
        "Voyado settings come from VOYADO_BASE_URL and VOYADO_API_KEY (and, optionally, "
        "VOYADO_USER_AGENT). Runs until SIGTERM or Ctrl-C, then delivers or releases what it "
        "holds.",
    )
    forward.add_argument("--redis", required=True, metavar="URL",
                         help="Redis URL, e.g. redis://localhost:6379/0")
    forward.add_argument("--stream", default="voyado-tracking",
                         help="stream name (default voyado-tracking)")
    forward.add_argument("--group", default="voyado-tracking",
                         help="consumer group (default voyado-tracking)")
    forward.add_argument("--consumer", default=None,
                         help="consumer name (default: host, pid and a random suffix)")
    forward.add_argument("--rate", type=per_second, default=40.0,
                         help="requests/s for the whole fleet, shared through Redis (default 40)")
    forward.add_argument("--claim-idle", type=seconds, default=60.0,
                         help="take over entries idle this many seconds (default 60)")
    forward.add_argument("--flush-interval", type=seconds, default=1.0,
                         help="seconds a partial batch may wait (default 1)")
    forward.add_argument("--max-batch-size", type=positive_int, default=500,
                         help="events per request at most (default 500)")
    forward.add_argument("--shutdown-timeout", type=seconds, default=30.0,
                         help="seconds a stop may take to deliver or release what this "
                         "forwarder holds (default 30)")
    forward.add_argument("--stale-consumer-after", type=seconds, default=3600.0,
                         help="remove other consumers of the group idle this many seconds "
                         "with nothing pending (default 3600)")
    forward.add_argument("--user-agent", default=None, metavar="SYSTEM/VERSION",
                         help="User-Agent of every request, e.g. MyShop/1.2 "
                         "(default: VOYADO_USER_AGENT, else voyado-tracking/<version>)")
    forward.add_argument("--stats-interval", type=seconds, default=10.0,
                         help="seconds between stats lines on stderr (default 10)")
    forward.add_argument("--metrics-port", type=port_number, default=None, metavar="PORT",
                         help="serve /metrics (Prometheus text format) and /healthz on this "
                         "port (0: a free port, printed on stderr)")
    forward.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                         help="address for --metrics-port (default 127.0.0.1)")
    forward.add_argument("--replay-dead", action="store_true",
                         help="move <stream>:dead back to the stream for another try, and exit")
