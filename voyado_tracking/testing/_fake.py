"""FakeVoyado: a real aiohttp server on loopback that behaves like Voyado's tracking API.

It checks what Voyado checks (``apikey``, ``User-Agent``, ``Content-Type``, the payload, with
the same wire code as the client), keeps cart state by the latest instant of ``time`` per
``cartReference``, records product views and requests, and injects faults on demand:

- :meth:`FakeVoyado.script` queues exact responses for the next requests (``Fault``);
- :meth:`FakeVoyado.chaos` draws faults at random, from a seed, for soak tests;
- ``latency`` delays every answer; :meth:`hold` / :meth:`release` park requests;
- ``reject_item_ids`` / ``reject_cart_references`` answer 400 to batches holding them;
- ``rate_limit=N`` answers 429 to requests beyond N in any sliding one-second window;
- :meth:`add_contact` registers contacts for the lookup endpoint, ``GET /api/v3/contacts/id``
  (``_contacts``), which shares the rate limit and the faults; ``lookups`` counts its answers.

Successful answers carry a small JSON body, ``{}`` (which the generated Voyado SDK parses),
not an empty one. While it runs, ``GET /_fake/state`` answers :meth:`FakeVoyado.state` as
JSON, for a person or a script looking at a standalone fake.

A fault that "drops" closes the connection without an answer; a "slow" one processes the
request and then answers after a delay, which is how a client timeout duplicates events.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from .._errors import InvalidEventError
from .._lifecycle import AsyncClosing
from .._models import Cart, ProductView
from .._wire import (
    CARTS,
    CARTS_BATCH,
    PRODUCT_VIEW,
    PRODUCT_VIEWS,
    USER_AGENT_PATTERN,
    event_to_wire,
    structure,
)
from ._contacts import LOOKUP, ContactBook
from ._engage import Engage
from ._faults import Chaos, Fault, RecordedRequest
from ._requestlog import request_log_state

__all__ = ["STATE_PATH", "FakeVoyado"]

STATE_PATH = "/_fake/state"
_SUCCESS = orjson.dumps({})

class FakeVoyado(ContactBook, AsyncClosing):
    """A loopback Voyado for tests and demos: ``async with FakeVoyado() as fake: fake.url``.

    Pass ``ssl_context`` (a server-side context) to serve HTTPS, e.g. to test TLS settings.

    ``rate_limit=N`` emulates Voyado's per-key limit: a request that finds N requests
    accepted in the last second is answered 429 with ``Retry-After`` (whole seconds until
    the window frees, at least 1) before anything else is looked at. Only accepted requests
    fill the window: Voyado counts every request, but counting refused ones too would lock
    a client that retries promptly out for good, and this way the rule a test checks is
    simple: no sliding one-second window holds more than N accepted requests (see
    :meth:`max_requests_in_any_window`). Refused requests are recorded
    (``rate_limited=True``), so tests can count them. ``None`` (the default) has no limit.

    ``engage``: the mails Engage would send for what the fake received, configured by
    ``product_feeds``, ``abandon_after`` and ``clock`` (see ``testing._engage``).
    """

    def __init__(
        self,
        *,
        api_key: str = "test-api-key",
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        rate_limit: int | None = None,
        product_feeds: Mapping[str, Iterable[str]] | None = None,
        abandon_after: float = 1800.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if rate_limit is not None and rate_limit < 1:
            raise ValueError(f"rate_limit must be >= 1 or None, got {rate_limit}")
        self._api_key = api_key
        self.rate_limit = rate_limit
        self._accepted: deque[float] = deque()  # arrivals within the last second
        self._ssl_context = ssl_context
        self.host = host
        self.port = port
        self.latency = 0.0
        self.reject_item_ids: set[str] = set()
        self.reject_cart_references: set[str] = set()
        self.carts: dict[str, Cart] = {}
        self.cart_updates: list[Cart] = []
        self.product_views: list[ProductView] = []
        self.requests: list[RecordedRequest] = []
        self._script: deque[Fault] = deque()
        self._chaos: Chaos | None = None
        self._rng = random.Random(0)
        self._open: asyncio.Event | None = None  # created on start, inside the loop
        self._runner: web.AppRunner | None = None
        self._faults_injected: Counter[str] = Counter()
        self._init_contacts()
        self.engage = Engage(self, product_feeds=product_feeds, abandon_after=abandon_after,
                             clock=clock)

    def __repr__(self) -> str:
        where = self.url if self._runner else "not started"
        return f"voyado_tracking.testing.FakeVoyado({where})"

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give a TrackingClient, e.g. ``http://127.0.0.1:41234``."""
        if self._runner is None:
            raise RuntimeError("FakeVoyado is not started")
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The key this fake accepts (a test value, not a secret)."""
        return self._api_key

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._open = asyncio.Event()
        self._open.set()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(CARTS, self._handle)
        app.router.add_post(CARTS_BATCH, self._handle)
        app.router.add_post(PRODUCT_VIEW, self._handle)
        app.router.add_post(PRODUCT_VIEWS, self._handle)
        app.router.add_get(STATE_PATH, self._handle_state)
        app.router.add_get(LOOKUP, self._handle_lookup)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl_context)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if self._open is not None:
            self._open.set()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeVoyado:
        await self.start()
        return self

    async def aclose(self) -> None:
        """The same as :meth:`close`."""
        await self.close()

    # -- fault injection ----------------------------------------------------------------------

    def script(self, *faults: Fault | int) -> None:
        """Answer the next requests with these faults, in order (an int is a status)."""
        self._script.extend(f if isinstance(f, Fault) else Fault(status=f) for f in faults)

    def chaos(self, chaos: Chaos | None) -> None:
        """Draw random faults for every request (``None`` stops them)."""
        self._chaos = chaos
        self._rng = random.Random(chaos.seed if chaos else 0)

    def hold(self) -> None:
        """Park every request (after recording its arrival) until :meth:`release`."""
        if self._open is None:
            raise RuntimeError("FakeVoyado is not started")
        self._open.clear()

    def release(self) -> None:
        if self._open is not None:
            self._open.set()

    @property
    def faults_injected(self) -> dict[str, int]:
        """How many faults of each kind were answered so far."""
        return dict(self._faults_injected)

    # -- what was received ------------------------------------------------------------------

    def product_view_counts(self) -> Counter[ProductView]:
        """How often each distinct product view was received (retries can duplicate)."""
        return Counter(self.product_views)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def state(self) -> dict[str, Any]:
        """What the fake holds, as JSON-ready data (also served at ``GET /_fake/state``).

        ``carts``: the latest cart per ``cartReference``, in wire form; ``productViews``: every
        product view received, in wire form and order; ``requests``: the number of requests,
        ``total`` and by ``path`` and ``status`` (``"0"``: connection dropped); ``requestLog``:
        the last 10,000 requests (``time``, ``path``, ``status``, ``events`` taken);
        ``busiestSecond``: the one-second window with the most arrivals (``start``,
        ``requests``, ``events``); ``cartUpdates``: the cart updates received;
        ``engageMails``: the mails Engage would send by now (``engage.mails()``).
        """
        state = {
            "carts": {ref: event_to_wire(cart) for ref, cart in self.carts.items()},
            "productViews": [event_to_wire(view) for view in self.product_views],
            "lookups": self.lookups,
            "requests": {
                "total": len(self.requests),
                "byPath": dict(Counter(r.path for r in self.requests)),
                "byStatus": {str(k): n for k, n in Counter(r.status for r in self.requests)
                             .items()},
            },
            "engageMails": self.engage.state(),
            **request_log_state(self.requests, len(self.cart_updates)),
        }
        result: dict[str, Any] = orjson.loads(orjson.dumps(state))  # times as ISO 8601 text
        return result

    def max_requests_in_any_window(self, seconds: float = 1.0) -> int:
        """The most requests accepted (not refused by ``rate_limit``) within any sliding
        window of *seconds*, by their arrival times."""
        times = sorted(r.at for r in self.requests if not r.rate_limited)
        most = first = 0
        for last, moment in enumerate(times):
            while moment - times[first] >= seconds:
                first += 1
            most = max(most, last - first + 1)
        return most

    def reset(self) -> None:
        """Forget all state, faults and recorded requests."""
        self.carts.clear()
        self.cart_updates.clear()
        self.product_views.clear()
        self.requests.clear()
        self._accepted.clear()
        self._script.clear()
        self._chaos = None
        self.reject_item_ids.clear()
        self.reject_cart_references.clear()
        self.latency = 0.0
        self._faults_injected.clear()
        self._init_contacts()
        self.release()

    # -- the endpoints ------------------------------------------------------------------------

    def _draw_fault(self) -> Fault | None:
        if self._script:
            return self._script.popleft()
        chaos = self._chaos
        if chaos is None:
            return None
        roll = self._rng.random()
        if (roll := roll - chaos.error_rate) < 0:
            return Fault(status=self._rng.choice(chaos.error_statuses))
        if (roll := roll - chaos.rate_limit_rate) < 0:
            return Fault(status=429, retry_after=chaos.retry_after)
        if (roll := roll - chaos.drop_rate) < 0:
            return Fault(drop=True)
        if roll - chaos.slow_rate < 0:
            return Fault(status=200, delay=chaos.slow_delay, process=True)
        return None

    async def _handle_state(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(self.state()), content_type="application/json")

    def _retry_after(self, at: float) -> int | None:
        """None if a request arriving *at* fits the rate limit (and count it), else the
        seconds until the window frees."""
        if self.rate_limit is None:
            return None
        window = self._accepted
        while window and at - window[0] >= 1.0:
            window.popleft()
        if len(window) < self.rate_limit:
            window.append(at)
            return None
        return max(1, math.ceil(1.0 - (at - window[0])))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        path = request.path
        body = await request.read()
        if (retry_after := self._retry_after(at)) is not None:
            self._record(request, path, body, 429, 0, at, rate_limited=True)
            return web.Response(status=429, body=_error("rate limit exceeded"),
                                headers={"Retry-After": str(retry_after)},
                                content_type="application/json")
        if self._open is not None and not self._open.is_set():
            await self._open.wait()
        fault = self._draw_fault()
        if self.latency:
            await asyncio.sleep(self.latency)

        status, payload, events = self._check(request, path, body)
        if fault is not None and not fault.process:
            return await self._answer_fault(request, path, body, fault, events, at)
        if status == 200:
            self._apply(events)
        self._record(request, path, body, status, len(events) if status == 200 else 0, at)
        if fault is not None:  # processed, then answered late (or with an error)
            self._faults_injected["slow" if fault.status == 200 else f"{fault.status}"] += 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status != 200:
                return self._fault_response(fault)
        return web.Response(status=status, body=payload, content_type="application/json")

    async def _answer_fault(
        self,
        request: web.Request,
        path: str,
        body: bytes,
        fault: Fault,
        events: list[Any],
        at: float,
    ) -> web.StreamResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            self._faults_injected["drop"] += 1
            self._record(request, path, body, 0, 0, at)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp treats this as a vanished connection
        self._faults_injected[str(fault.status)] += 1
        # A success answer tells the client its events were stored: make that true.
        stored = events if 200 <= fault.status < 300 else []
        self._apply(stored)
        self._record(request, path, body, fault.status, len(stored), at)
        return self._fault_response(fault)

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        body = fault.body
        if body is None:
            body = _SUCCESS if 200 <= fault.status < 300 else _error("injected fault")
        return web.Response(
            status=fault.status,
            body=body.encode() if isinstance(body, str) else body,
            headers=headers,
            content_type=fault.content_type,
        )

    def _record(
        self,
        request: web.Request,
        path: str,
        body: bytes,
        status: int,
        events: int,
        at: float,
        *,
        rate_limited: bool = False,
    ) -> None:
        self.requests.append(
            RecordedRequest(
                path=path,
                status=status,
                events=events,
                key_ok=request.headers.get("apikey") == self._api_key,
                user_agent=request.headers.get("User-Agent"),
                content_type=request.headers.get("Content-Type"),
                body=body,
                at=at,
                rate_limited=rate_limited,
            )
        )

    def _check(
        self, request: web.Request, path: str, body: bytes
    ) -> tuple[int, bytes, list[Any]]:
        """Status, error body and parsed events of a request, as Voyado would judge it."""
        if request.headers.get("apikey") != self._api_key:
            return 401, _error("missing or invalid apikey header"), []
        if not USER_AGENT_PATTERN.fullmatch(request.headers.get("User-Agent", "")):
            return 400, _error("User-Agent header must look like 'System/Version'"), []
        if request.content_type != "application/json":
            return 500, _error("Content-Type must be application/json"), []
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, _error("body is not valid JSON"), []
        kind: type[Cart] | type[ProductView] = Cart if path.startswith(CARTS) else ProductView
        batch = path in (CARTS_BATCH, PRODUCT_VIEWS)
        if batch and not isinstance(data, list):
            return 400, _error("body must be a JSON array"), []
        items = data if batch else [data]
        events: list[Any] = []
        for index, item in enumerate(items):
            try:
                event = structure(kind, item)
            except InvalidEventError as error:
                return 400, _error(str(error), index=index, field=error.field), []
            if self._rejected(event):
                return 400, _error("event rejected by the fake's reject list", index=index), []
            events.append(event)
        return 200, _SUCCESS, events

    def _rejected(self, event: Cart | ProductView) -> bool:
        if isinstance(event, Cart):
            return event.cart_reference in self.reject_cart_references
        return event.item_id in self.reject_item_ids

    def _apply(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Cart):
                self.cart_updates.append(event)
                current = self.carts.get(event.cart_reference)
                # Voyado's rule, written out here on purpose: the stand-in for Voyado must
                # not share the library's code (``supersedes``), or a mistake there would
                # pass every test run against it.
                if current is None or event.time >= current.time:
                    self.carts[event.cart_reference] = event
            else:
                self.product_views.append(event)


def _error(message: str, **extra: object) -> bytes:
    return orjson.dumps({"error": message, **extra})
