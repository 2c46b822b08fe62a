"""A minimal loopback sink for the benchmarks: answers 200 and counts delivered events.

Run in its own process (``python benchmarks/sink.py``); it binds 127.0.0.1 on a free port and
prints ``PORT <n>`` on its first line. Every POST is answered ``200 {}``; events are counted
per path with a cheap marker count (one marker per event), so the sink spends little CPU per
event and does not favour any client:

=============================================  =======================================
path                                           one event is
=============================================  =======================================
``/api/v2/tracking/productviews``              an ``"itemId"`` key in the JSON array
``/api/v2/tracking/carts/batch``               a ``"cartReference"`` key
``/api/v2/tracking/productview`` and ``carts`` the request itself
``/v1/batch`` (Segment)                        a ``"messageId"`` key
``/batch/`` (PostHog)                          an ``"uuid"`` key
anything else                                  the request itself
=============================================  =======================================

Control endpoints (GET): ``/_stats`` (JSON counts), ``/_reset`` (also releases),
``/_hold`` (later requests wait until ``/_release``), ``/_release``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import orjson
from aiohttp import web

MARKERS = {
    "/api/v2/tracking/productviews": b'"itemId"',
    "/api/v2/tracking/carts/batch": b'"cartReference"',
    "/v1/batch": b'"messageId"',
    "/batch/": b'"uuid"',
}
OK_BODY = b"{}"


class Sink:
    def __init__(self) -> None:
        self.events: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.release = asyncio.Event()
        self.release.set()

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        if not self.release.is_set():
            await self.release.wait()
        marker = MARKERS.get(path)
        count = body.count(marker) if marker is not None else 1
        self.events[path] = self.events.get(path, 0) + count
        self.requests[path] = self.requests.get(path, 0) + 1
        return web.Response(body=OK_BODY, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        data = {"events": self.events, "requests": self.requests}
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def reset(self, request: web.Request) -> web.Response:
        self.events, self.requests = {}, {}
        self.release.set()  # a trial that failed while holding must not stall the next one
        return web.Response(body=OK_BODY, content_type="application/json")

    async def hold(self, request: web.Request) -> web.Response:
        self.release.clear()
        return web.Response(body=OK_BODY, content_type="application/json")

    async def unhold(self, request: web.Request) -> web.Response:
        self.release.set()
        return web.Response(body=OK_BODY, content_type="application/json")


async def main() -> None:
    # A trial process exits as soon as it has its numbers, sometimes mid-request: not an error.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    sink = Sink()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/_stats", sink.stats)
    app.router.add_get("/_reset", sink.reset)
    app.router.add_get("/_hold", sink.hold)
    app.router.add_get("/_release", sink.unhold)
    app.router.add_post("/{tail:.*}", sink.post)
    runner = await serve_until_stdin_closes(app)  # until its parent closes our stdin
    await runner.cleanup()


async def serve_until_stdin_closes(app: web.Application) -> web.AppRunner:
    """Serve *app* on 127.0.0.1 until stdin closes; the caller cleans the runner up.

    The port is free, picked by the OS, and printed first as ``PORT <n>``; no access log.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    return runner


if __name__ == "__main__":
    asyncio.run(main())
