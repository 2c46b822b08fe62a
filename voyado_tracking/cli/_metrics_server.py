"""The forwarder's HTTP endpoints for operators: ``/metrics`` and ``/healthz``.

``voyado-tracking forward --metrics-port PORT [--metrics-host 127.0.0.1]`` serves them on the
forwarder's own event loop (aiohttp, no OpenTelemetry SDK):

- ``/metrics``: the Prometheus text format of the forwarder's :class:`Registry` (the series are
  listed in ``voyado_tracking._exposition``), its totals published afresh for each scrape;
- ``/healthz``: ``200 ok``, or ``503`` with the reason, one a line, when Redis did not answer
  a ``PING`` within a second or the reader task stopped. Voyado failing never makes a
  forwarder unhealthy: restarting it would not help, and it retries by itself.

The ``PING`` goes through a client of its own, so a health check that times out never
disturbs the forwarder's connections.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .._exposition import CONTENT_TYPE, Registry

if TYPE_CHECKING:
    from ..redis import Forwarder

__all__ = ["PING_TIMEOUT", "MetricsServer", "port_number"]

PING_TIMEOUT: Final = 1.0  # seconds Redis has to answer the health check's PING


class MetricsServer:
    """``/metrics`` and ``/healthz`` of a started forwarder, on its loop (see the module)."""

    def __init__(self, runner: web.AppRunner | None = None, health: Any = None,
                 url: str | None = None) -> None:
        self._runner = runner
        self._health = health
        self.url = url

    @classmethod
    async def start(
        cls, forwarder: Forwarder, redis_url: str, host: str, port: int | None
    ) -> MetricsServer:
        """Serve on *host*:*port* (0: a free port) and say where on stderr; *port* None
        serves nothing (a server that only closes)."""
        if port is None:
            return cls()
        import redis.asyncio as aioredis

        from ..redis._stream import close_client

        registry = Registry(forwarder)
        registry.attach()
        await registry.refresh_backlog()  # so that the first scrape has stream_backlog
        health = aioredis.from_url(redis_url, socket_connect_timeout=PING_TIMEOUT,
                                   socket_timeout=PING_TIMEOUT)

        async def metrics(request: web.Request) -> web.Response:
            forwarder._outcomes.publish()  # the forwarder's loop: fresh totals for the scrape
            return web.Response(body=registry.render().encode(),
                                headers={"Content-Type": CONTENT_TYPE})

        async def healthz(request: web.Request) -> web.Response:
            reasons = []
            if forwarder._reader_stopped():
                reasons.append("the forwarder's reader task stopped")
            try:
                await asyncio.wait_for(health.ping(), PING_TIMEOUT)
            except Exception as error:  # whatever it was, Redis did not answer in time
                reasons.append(f"Redis did not answer PING within {PING_TIMEOUT:g} s "
                               f"({type(error).__name__})")
            if reasons:
                return web.Response(status=503, text="\n".join(reasons) + "\n")
            return web.Response(text="ok\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            await close_client(health)
            raise
        bound = runner.addresses[0][1] if runner.addresses else port
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        print(f"metrics on {url}/metrics, health on {url}/healthz", file=sys.stderr, flush=True)
        return cls(runner, health, url)

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            from ..redis._stream import close_client

            await runner.cleanup()
            await close_client(self._health)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value
