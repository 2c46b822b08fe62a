"""The ``voyado-tracking`` command line (also ``python -m voyado_tracking``).

``demo``
    Starts a FakeVoyado in-process, drives simulated shop traffic through a TrackingBuffer
    while the fake injects faults, and checks that Voyado ends up with every product view and
    the latest update of every cart.
``send FILE.jsonl``
    Sends an event file (or replays a buffer's spool) through a TrackingBuffer, with
    backpressure. Bad lines are reported on stderr by line number and skipped.
``fake-server``
    Runs FakeVoyado standalone, for trying an app against it by hand.

Output: live progress on stderr (rich when stderr is a terminal and rich is installed, plain
periodic lines otherwise), results on stdout. Exit status: 0 everything delivered (or valid),
1 some lines invalid or events undelivered, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Final

import attrs

from ._buffer import BufferStats, TrackingBuffer
from ._client import TrackingClient, is_loopback
from ._errors import InvalidEventError, VoyadoError
from ._eventfile import event_to_line, line_to_event
from ._models import Cart, CartItem, ProductView, Utm
from ._retry import RetryPolicy
from ._settings import FlushSettings
from ._version import __version__
from ._wire import Event
from .testing import Chaos, FakeVoyado

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

PROG: Final = "voyado-tracking"
log = logging.getLogger("voyado_tracking")


class UsageError(Exception):
    """A problem with the command line or its environment (exit status 2)."""


# -- progress display ----------------------------------------------------------------------

Poll = Callable[[], tuple[int, "int | None", str]]  # completed, total, status text


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _progress_mode(requested: str, stream: IO[str]) -> str:
    if requested == "auto":
        return "rich" if stream.isatty() and _rich_available() else "plain"
    if requested == "rich" and not _rich_available():
        return "plain"
    return requested


@contextlib.asynccontextmanager
async def _progress(mode: str, title: str, poll: Poll, interval: float) -> AsyncIterator[None]:
    """Show *poll*'s progress while the block runs: a rich bar, plain lines, or nothing.

    Polling from a task keeps the hot path free of display code.
    """
    if mode == "none":
        yield
        return
    if mode == "rich":
        async with _rich_progress(title, poll):
            yield
        return
    started = time.monotonic()

    def line() -> None:
        completed, total, status = poll()
        done = f"{100 * completed / total:3.0f}% " if total else ""
        print(f"{title} [{time.monotonic() - started:5.1f}s] {done}{status}",
              file=sys.stderr, flush=True)

    async def tick() -> None:
        while True:
            await asyncio.sleep(interval)
            line()

    task = asyncio.get_running_loop().create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        line()  # the final state, however short the run


@contextlib.asynccontextmanager
async def _rich_progress(title: str, poll: Poll) -> AsyncIterator[None]:
    from rich.console import Console, RenderableType
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class StatusProgress(Progress):
        """A progress bar with a line of counters under it (too long for one 80-column row)."""

        status = ""

        def get_renderables(self) -> Iterator[RenderableType]:
            yield self.make_tasks_table(self.tasks)
            yield Text(f"  {self.status}", style="dim")

    progress = StatusProgress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )

    def refresh() -> None:
        completed, total, status = poll()
        progress.status = status
        progress.update(task_id, completed=completed, total=total)

    task_id = progress.add_task(title, total=None)
    refresh()

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.1)
            refresh()

    with progress:
        task = asyncio.get_running_loop().create_task(tick())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            refresh()


def _configure_logging(mode: str, level: int) -> None:
    logger = logging.getLogger("voyado_tracking")
    logger.setLevel(level)
    logger.propagate = False
    handler: logging.Handler
    if mode == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]


def _stats_text(stats: BufferStats) -> str:
    pending = stats.pending_carts + stats.pending_product_views
    return (
        f"sent {stats.sent}  pending {pending}  in flight {stats.in_flight}  "
        f"requests {stats.requests}  retries {stats.retries}"
    )


# -- demo ----------------------------------------------------------------------------------

_SHOP: Final = "https://shop.example.com"
_LOCALES: Final = (
    ("sv-SE", timedelta(hours=1)),
    ("sv-SE", timedelta(hours=2)),
    ("fi-FI", timedelta(hours=2)),
    ("nb-NO", timedelta(hours=1)),
    ("en-GB", timedelta(0)),
    ("de-DE", timedelta(hours=1)),
)
_CATALOGUE: Final = {
    category: [f"{category[:3].upper()}-{n:03d}" for n in range(1, 41)]
    for category in ("shoes", "jackets", "shirts", "bags", "watches", "socks")
}
_CAMPAIGNS: Final = (
    (),
    (),
    (Utm("utm_source", "newsletter"), Utm("utm_medium", "email")),
    (Utm("utm_source", "google"), Utm("utm_medium", "cpc"), Utm("utm_campaign", "black-friday")),
    (Utm("utm_source", "instagram"), Utm("utm_medium", "social")),
)
_REFERRERS: Final = (None, None, "https://www.google.com/", "https://www.instagram.com/")


@attrs.define
class _Traffic:
    """What the simulated shoppers produced: the expected end state at Voyado."""

    budget: int
    deadline: float
    buffer: TrackingBuffer
    generated: int = 0
    views: Counter[ProductView] = attrs.field(factory=Counter)
    latest_carts: dict[str, Cart] = attrs.field(factory=dict)
    cart_updates: int = 0
    checkouts: int = 0
    abandoned: int = 0

    last_event_at: float = 0.0

    def open(self) -> bool:
        return self.generated < self.budget and time.monotonic() < self.deadline

    async def pause(self, seconds: float) -> None:
        """A shopper thinks; never past the end of the traffic."""
        await asyncio.sleep(max(0.0, min(seconds, self.deadline - time.monotonic())))

    def emit(self, event: Event) -> None:
        self.generated += 1
        self.last_event_at = time.monotonic()
        if isinstance(event, Cart):
            self.cart_updates += 1
            current = self.latest_carts.get(event.cart_reference)
            if current is None or event.time >= current.time:
                self.latest_carts[event.cart_reference] = event
        else:
            self.views[event] += 1
        self.buffer.enqueue(event)


async def _shopper(number: int, traffic: _Traffic, rng: random.Random, think: float) -> None:
    """One shopper: sessions of browsing, adding and removing items, checkouts or abandons."""
    contact_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    language, offset = rng.choice(_LOCALES)
    zone = timezone(offset)
    last_time: datetime | None = None
    visit = 0

    def now() -> datetime:
        # Strictly increasing per shopper, so "the latest update" is always well defined.
        nonlocal last_time
        moment = datetime.now(zone)
        if last_time is not None and moment <= last_time:
            moment = last_time + timedelta(microseconds=1)
        last_time = moment
        return moment

    await traffic.pause(rng.uniform(0, think))
    while traffic.open():
        visit += 1
        session_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        cart_reference = f"cart-{number:05d}-{visit:03d}"
        items: dict[str, int] = {}
        utm = rng.choice(_CAMPAIGNS)
        referrer = rng.choice(_REFERRERS)
        category = rng.choice(list(_CATALOGUE))
        sku = rng.choice(_CATALOGUE[category])
        first = True

        def cart(cart_reference: str = cart_reference, items: dict[str, int] = items) -> Cart:
            return Cart(
                cart_reference,
                contact_id,
                items=[CartItem(s, q) for s, q in items.items()],
                time=now(),
                language=language,
                url=f"{_SHOP}/cart",
            )

        for _ in range(rng.randint(2, 14)):
            if not traffic.open():
                return  # the shop closes: carts stay as they are (abandoned)
            roll = rng.random()
            if roll < 0.62 or first:
                if rng.random() < 0.3:
                    category = rng.choice(list(_CATALOGUE))
                sku = rng.choice(_CATALOGUE[category])
                traffic.emit(
                    ProductView(
                        sku,
                        contact_id,
                        time=now(),
                        category=category,
                        session_id=session_id,
                        new_session=first,
                        language=language,
                        url=f"{_SHOP}/{category}/{sku.lower()}",
                        external_referrer=referrer if first else None,
                        utm=utm if first else (),
                    )
                )
                first = False
            elif roll < 0.85 or not items:
                items[sku] = items.get(sku, 0) + rng.choice((1, 1, 1, 2))
                traffic.emit(cart())
            else:
                removed = rng.choice(list(items))
                if items[removed] > 1 and rng.random() < 0.5:
                    items[removed] -= 1
                else:
                    del items[removed]
                traffic.emit(cart())
            await traffic.pause(rng.expovariate(1.0 / think))
        if items and traffic.open():
            if rng.random() < 0.45:
                items.clear()  # checked out: an emptied cart stops the abandoned-cart mail
                traffic.emit(cart())
                traffic.checkouts += 1
            else:
                traffic.abandoned += 1
        await traffic.pause(rng.expovariate(1.0 / (think * 3)))


def _check_delivery(fake: FakeVoyado, traffic: _Traffic) -> list[tuple[bool, str]]:
    """The demo's CHECK lines: (holds, description)."""
    checks: list[tuple[bool, str]] = []
    wrong = [
        ref for ref, cart in traffic.latest_carts.items() if fake.carts.get(ref) != cart
    ]
    extra = set(fake.carts) - set(traffic.latest_carts)
    checks.append((
        not wrong and not extra,
        f"cart state at Voyado == latest-by-time update of each of "
        f"{len(traffic.latest_carts)} carts"
        + (f" ({len(wrong)} wrong or missing, {len(extra)} unexpected)" if wrong or extra else ""),
    ))
    received = fake.product_view_counts()
    missing = sum((traffic.views - received).values())
    duplicates = sum((received - traffic.views).values())
    expected = sum(traffic.views.values())
    checks.append((
        missing == 0,
        f"every product view arrived: {expected - missing} of {expected}"
        + (f" ({duplicates} duplicates from retries)" if duplicates else ""),
    ))
    return checks


async def _demo(args: argparse.Namespace, mode: str) -> int:
    rng = random.Random(args.seed)
    async with FakeVoyado() as fake:
        if args.chaos:
            fake.chaos(Chaos(
                seed=args.seed,
                error_rate=args.error_rate,
                rate_limit_rate=args.rate_limit_rate,
                retry_after=0.05,
                drop_rate=args.drop_rate,
            ))
        settings = FlushSettings(
            max_batch_size=args.batch_size,
            flush_interval=args.flush_interval,
            max_pending=max(50_000, args.batch_size),
            retry=RetryPolicy(
                max_attempts=None, initial_backoff=0.05, max_backoff=0.5, max_elapsed=30.0
            ),
            shutdown_timeout=30.0,
        )
        client = TrackingClient(
            fake.url, fake.api_key, user_agent=f"VoyadoTrackingDemo/{__version__}", timeout=5.0
        )
        async with client:
            buffer = TrackingBuffer(client, settings)
            traffic = _Traffic(args.events, time.monotonic() + args.duration, buffer)
            # Mean think time that spreads the event budget over the duration (a shopper's
            # pause between visits makes an event cost about 1.3 think times).
            think = max(0.001, args.shoppers * args.duration / args.events / 1.3)
            print(
                f"{PROG} demo: {args.shoppers} shoppers, up to {args.events} events over "
                f"~{args.duration:g} s, against FakeVoyado at {fake.url}"
                + (" with injected faults" if args.chaos else ""),
                flush=True,
            )

            def poll() -> tuple[int, int | None, str]:
                # Once the shoppers are done (budget or duration), the bar is complete.
                total = traffic.generated if traffic_over else traffic.budget
                status = f"enqueued {traffic.generated}  {_stats_text(buffer.stats)}"
                return traffic.generated, total, status

            traffic_over = False

            started = time.monotonic()
            async with _progress(mode, "shop traffic", poll, 1.0):
                shoppers = [
                    asyncio.create_task(
                        _shopper(n, traffic, random.Random(rng.getrandbits(64)), think)
                    )
                    for n in range(args.shoppers)
                ]
                await asyncio.gather(*shoppers)
                traffic_over = True
                traffic_done = traffic.last_event_at or time.monotonic()
                await buffer.aclose(timeout=settings.shutdown_timeout)
            finished = time.monotonic()
        stats = buffer.stats
        checks = _check_delivery(fake, traffic)
        checks.append((
            stats.dropped == 0 and stats.dead_lettered == 0 and stats.spooled == 0,
            "nothing dropped, dead-lettered or left behind",
        ))
        faults = ", ".join(f"{kind}: {n}" for kind, n in sorted(fake.faults_injected.items()))
        views = sum(traffic.views.values())
        traffic_time = max(traffic_done - started, 1e-9)
        total_time = max(finished - started, 1e-9)
        pad = " " * 37
        print(
            "\n".join([
                "",
                "Report",
                f"  events enqueued          {stats.enqueued:>8}  {views} product views, "
                f"{traffic.cart_updates} cart updates",
                f"{pad}({traffic.checkouts} checkouts, {traffic.abandoned} abandoned carts)",
                f"  cart updates collapsed   {stats.collapsed:>8}  superseded in the buffer "
                "before sending",
                f"  events sent              {stats.sent:>8}",
                f"  requests sent            {stats.requests:>8}  faults injected: "
                f"{faults or 'none'}",
                f"  retries                  {stats.retries:>8}",
                f"  dropped / dead-lettered  {stats.dropped:>4} / {stats.dead_lettered}",
                f"  events/s                 {stats.enqueued / traffic_time:>8.0f}  enqueued "
                f"over {traffic_time:.1f} s of traffic",
                f"{pad}(buffer drained {total_time - traffic_time:.2f} s after the traffic ended)",
                "",
            ])
        )
        for holds, text in checks:
            print(f"CHECK {'OK  ' if holds else 'FAIL'} {text}")
        ok = all(holds for holds, _ in checks)
        print(f"RESULT: {'OK' if ok else 'FAILED'}")
        return EXIT_OK if ok else EXIT_FAILED


# -- send ----------------------------------------------------------------------------------


@attrs.define
class _SendState:
    lines: int = 0
    read_bytes: int = 0
    total_bytes: int | None = None
    valid: int = 0
    invalid: int = 0
    carts: int = 0
    product_views: int = 0
    dead_letters: list[tuple[Event, str]] = attrs.field(factory=list)
    dropped: list[Event] = attrs.field(factory=list)


def _describe_invalid(error: InvalidEventError) -> str:
    return f"{error.field} {error.problem}"


def _open_input(name: str) -> tuple[IO[bytes], int | None, str]:
    """The input stream, its size if known, and the name used in messages."""
    if name == "-":
        return sys.stdin.buffer, None, "<stdin>"
    path = Path(name)
    try:
        stream = path.open("rb")
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        size: int | None = os.fstat(stream.fileno()).st_size or None
    except OSError:
        size = None
    return stream, size, name


def _lines(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """Blocks of lines (about 1 MB each), read off the event loop by the caller."""
    while True:
        block = stream.readlines(1 << 20)
        if not block:
            return
        yield block


async def _read_events(
    stream: IO[bytes], source: str, state: _SendState
) -> AsyncIterator[Event]:
    blocks = _lines(stream)
    while True:
        block = await asyncio.to_thread(next, blocks, None)
        if block is None:
            return
        for raw in block:
            state.lines += 1
            state.read_bytes += len(raw)
            if state.lines == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte order mark, as some editors write
            if not raw.strip():
                continue
            try:
                event = line_to_event(raw)
            except InvalidEventError as error:
                state.invalid += 1
                print(f"{source}:{state.lines}: skipped: {_describe_invalid(error)}",
                      file=sys.stderr)
                continue
            state.valid += 1
            if isinstance(event, Cart):
                state.carts += 1
            else:
                state.product_views += 1
            yield event


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    base_url = args.base_url or os.environ.get("VOYADO_BASE_URL", "")
    api_key = args.api_key or os.environ.get("VOYADO_API_KEY", "")
    missing = [
        what
        for what, value in (("--base-url or VOYADO_BASE_URL", base_url),
                            ("--api-key or VOYADO_API_KEY", api_key))
        if not value.strip()
    ]
    if missing:
        raise UsageError(f"missing {' and '.join(missing)} (or use --dry-run)")
    return base_url.strip(), api_key.strip()


async def _send(args: argparse.Namespace, mode: str) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.timeout <= 0 or args.retry_for <= 0:
        raise UsageError("--timeout and --retry-for must be > 0")
    client: TrackingClient | None = None
    if not args.dry_run:
        base_url, api_key = _connection(args)
        try:
            client = TrackingClient(
                base_url,
                api_key,
                user_agent=args.user_agent,
                timeout=args.timeout,
                max_batch_size=args.batch_size,
                max_requests_per_second=args.max_rps if args.max_rps > 0 else None,
            )
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from None  # never contains the key
    spool = Path(args.spool) if args.spool else None
    if spool is not None and not os.access(spool.parent, os.W_OK):
        raise UsageError(f"cannot write the spool file {spool}: its directory is not writable")
    if spool is not None and args.file != "-":
        with contextlib.suppress(OSError):
            if spool.exists() and spool.samefile(args.file):
                raise UsageError("--spool must not be the file being sent")
    stream, size, source = _open_input(args.file)
    state = _SendState(total_bytes=size)
    try:
        if client is None:
            return await _validate_only(stream, source, state, mode)
        async with client:
            return await _deliver(client, stream, source, state, spool, args, mode)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


async def _validate_only(stream: IO[bytes], source: str, state: _SendState, mode: str) -> int:
    def poll() -> tuple[int, int | None, str]:
        return state.read_bytes, state.total_bytes, f"{state.lines} lines"

    async with _progress(mode, "validating", poll, 2.0):
        async for _ in _read_events(stream, source, state):
            pass
    print(
        f"dry run: {state.valid} valid events ({state.product_views} product views, "
        f"{state.carts} cart updates), {state.invalid} invalid lines skipped; nothing sent"
    )
    return EXIT_OK if state.invalid == 0 else EXIT_FAILED


async def _deliver(
    client: TrackingClient,
    stream: IO[bytes],
    source: str,
    state: _SendState,
    spool: Path | None,
    args: argparse.Namespace,
    mode: str,
) -> int:
    settings = FlushSettings(
        max_batch_size=args.batch_size,
        flush_interval=0.2,
        max_pending=max(10_000, 4 * args.batch_size),
        retry=RetryPolicy(
            max_attempts=None,
            initial_backoff=min(1.0, args.retry_for),
            max_backoff=max(min(30.0, args.retry_for), min(1.0, args.retry_for)),
            max_elapsed=args.retry_for,
        ),
        shutdown_timeout=5.0,
    )

    def dead_letter(event: Event, error: VoyadoError) -> None:
        state.dead_letters.append((event, str(error)))

    def dropped(event: Event, reason: str) -> None:
        state.dropped.append(event)

    buffer = TrackingBuffer(
        client, settings, on_dead_letter=dead_letter, on_drop=dropped, spool_path=spool
    )
    async def pump() -> None:
        async for event in _read_events(stream, source, state):
            await buffer.put(event)
        await buffer.flush()

    def poll() -> tuple[int, int | None, str]:
        stats = buffer.stats
        return (
            state.read_bytes,
            state.total_bytes,
            f"{state.lines} lines  skipped {state.invalid}  {_stats_text(stats)}",
        )

    loop = asyncio.get_running_loop()
    interrupted = False
    async with _progress(mode, "sending", poll, 2.0):
        pumping = loop.create_task(pump())

        def interrupt() -> None:
            # Stop reading and retrying at once; the close below spools what is left.
            nonlocal interrupted
            interrupted = True
            pumping.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, interrupt)
        try:
            await pumping
        except asyncio.CancelledError:
            if not interrupted:
                raise
            print(f"{PROG}: interrupted after line {state.lines}", file=sys.stderr)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await buffer.aclose(timeout=settings.shutdown_timeout)
    return _send_report(buffer.stats, state, spool)


def _send_report(stats: BufferStats, state: _SendState, spool: Path | None) -> int:
    for event, reason in state.dead_letters[:10]:
        what = (f"cart {event.cart_reference}" if isinstance(event, Cart)
                else f"product view of {event.item_id}")
        print(f"{PROG}: not delivered: {what}: {reason}", file=sys.stderr)
    if len(state.dead_letters) > 10:
        print(f"{PROG}: ... and {len(state.dead_letters) - 10} more not delivered",
              file=sys.stderr)
    undelivered = stats.dead_lettered + stats.dropped + stats.spooled
    if spool is not None and (state.dead_letters or state.dropped):
        try:
            with spool.open("ab") as out:
                out.writelines(
                    event_to_line(e, reason=f"dead_lettered: {r}") for e, r in state.dead_letters
                )
                out.writelines(event_to_line(e, reason="dropped") for e in state.dropped)
        except OSError as error:
            print(f"{PROG}: could not write the spool file {spool}: {error.strerror}",
                  file=sys.stderr)
    parts = [
        f"read {state.valid} valid events ({state.product_views} product views, "
        f"{state.carts} cart updates)",
        f"sent {stats.sent} in {stats.requests} requests ({stats.collapsed} cart updates "
        "collapsed)",
        f"skipped {state.invalid} invalid lines",
        f"failed {undelivered} (dead-lettered {stats.dead_lettered}, dropped {stats.dropped}, "
        f"spooled {stats.spooled})",
    ]
    print("; ".join(parts))
    if undelivered and spool is not None:
        print(f"undelivered events were written to {spool}; replay them with "
              f"'{PROG} send {spool}'")
    ok = state.invalid == 0 and undelivered == 0
    return EXIT_OK if ok else EXIT_FAILED


# -- fake-server ---------------------------------------------------------------------------


async def _fake_server(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.public:
        raise UsageError(f"--host {args.host} is not a loopback address; add --public to "
                         "serve the fake on the network")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    fake = FakeVoyado(api_key=args.api_key, host=args.host, port=args.port)
    fake.latency = args.latency
    if args.error_rate or args.rate_limit_rate or args.drop_rate:
        fake.chaos(Chaos(seed=args.seed, error_rate=args.error_rate,
                         rate_limit_rate=args.rate_limit_rate, drop_rate=args.drop_rate,
                         retry_after=args.retry_after))
    try:
        await fake.start()
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        print(f"VOYADO_BASE_URL={fake.url} VOYADO_API_KEY={fake.api_key}", flush=True)
        print(f"{PROG}: FakeVoyado listening; Ctrl-C to stop", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await fake.close()
    print(
        f"{PROG}: stopped after {len(fake.requests)} requests: {len(fake.product_views)} "
        f"product views, {len(fake.cart_updates)} cart updates ({len(fake.carts)} carts)",
        file=sys.stderr,
    )
    return EXIT_OK


# -- argument parsing ----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _bounded_float(
    what: str, accept: Callable[[float], bool], bounds: str
) -> Callable[[str], float]:
    """An argparse type for a float that *accept* allows (``bounds`` says which)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


_seconds = _bounded_float("a number of seconds", lambda v: 0 < v < float("inf"), "> 0")
_non_negative = _bounded_float("a number", lambda v: 0 <= v < float("inf"), ">= 0")
_rate = _bounded_float("a probability", lambda v: 0 <= v <= 1, "between 0 and 1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Send cart updates and product views to Voyado Engage; demo and test tools.",
        epilog="Exit status: 0 all delivered, 1 some lines invalid or events undelivered, "
        "2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument(
        "--progress", choices=("auto", "rich", "plain", "none"), default="auto",
        help="live progress on stderr: rich bar on a terminal, plain lines otherwise (auto)",
    )
    progress.add_argument("-v", "--verbose", action="store_true",
                          help="log every retry and failure of the library")

    demo = commands.add_parser(
        "demo", parents=[progress],
        help="simulate shop traffic against an in-process fake Voyado and check the result",
        description="Start FakeVoyado in-process, drive simulated shoppers (browsing, adding "
        "and removing items, checking out) through a TrackingBuffer while the fake injects "
        "faults, then report and CHECK that Voyado holds the latest update of every cart and "
        "every product view. Exit 0 only if the checks hold.",
    )
    demo.add_argument("--shoppers", type=_positive_int, default=300,
                      help="concurrent shoppers (default 300)")
    demo.add_argument("--events", type=_positive_int, default=15_000,
                      help="stop after this many events (default 15000)")
    demo.add_argument("--duration", type=_seconds, default=8.0,
                      help="spread the traffic over about this many seconds, and stop "
                      "after them (default 8)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument("--batch-size", type=_positive_int, default=500,
                      help="FlushSettings.max_batch_size (default 500)")
    demo.add_argument("--flush-interval", type=_seconds, default=0.5,
                      help="FlushSettings.flush_interval in seconds (default 0.5)")
    demo.add_argument("--no-chaos", dest="chaos", action="store_false",
                      help="no injected faults")
    demo.add_argument("--error-rate", type=_rate, default=0.08,
                      help="share of requests answered 5xx (default 0.08)")
    demo.add_argument("--rate-limit-rate", type=_rate, default=0.04,
                      help="share of requests answered 429 + Retry-After (default 0.04)")
    demo.add_argument("--drop-rate", type=_rate, default=0.02,
                      help="share of connections dropped without an answer (default 0.02)")

    send = commands.add_parser(
        "send", parents=[progress],
        help="send a JSON Lines event file (or replay a spool) to Voyado",
        description="Send a JSON Lines event file through a TrackingBuffer: one "
        '{"type": "cart"|"product_view", "event": {...}} object per line, as written by the '
        "buffer's spool. Invalid lines are reported on stderr with their line number and "
        "skipped; the others are sent.",
        epilog="The API key is best passed in VOYADO_API_KEY (a flag is visible to other "
        "users of the machine). Exit status: 0 all delivered, 1 some lines invalid or events "
        "undelivered, 2 usage error.",
    )
    send.add_argument("file", metavar="FILE.jsonl", help="event file, or - for stdin")
    send.add_argument("--base-url", help="e.g. https://<tenant>.voyado.com "
                      "(default: $VOYADO_BASE_URL)")
    send.add_argument("--api-key", help="Voyado API key (default: $VOYADO_API_KEY)")
    send.add_argument("--user-agent", default=f"VoyadoTrackingCli/{__version__}",
                      help="User-Agent sent to Voyado, as System/Version")
    send.add_argument("--batch-size", type=_positive_int, default=500,
                      help="events per request (default 500)")
    send.add_argument("--timeout", type=_seconds, default=10.0,
                      help="seconds per request (default 10)")
    send.add_argument("--retry-for", type=_seconds, default=120.0,
                      help="give up on a batch after retrying this many seconds (default 120)")
    send.add_argument("--max-rps", type=_non_negative, default=40.0,
                      help="client-side request rate limit, 0 for none (default 40)")
    send.add_argument("--spool", metavar="FILE",
                      help="append undelivered events to FILE (JSON Lines, replayable "
                      "with send)")
    send.add_argument("--dry-run", action="store_true",
                      help="validate the file only: send nothing, no URL or key needed")

    fake = commands.add_parser(
        "fake-server",
        help="run a fake Voyado tracking API on loopback",
        description="Run FakeVoyado standalone. Prints 'VOYADO_BASE_URL=... "
        "VOYADO_API_KEY=...' on one line of stdout, then serves until Ctrl-C or SIGTERM.",
    )
    fake.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    fake.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    fake.add_argument("--api-key", default="test-api-key",
                      help="the key the fake accepts (default test-api-key)")
    fake.add_argument("--public", action="store_true",
                      help="allow a --host that is not a loopback address")
    fake.add_argument("--latency", type=_non_negative, default=0.0,
                      help="seconds added to every answer (default 0)")
    fake.add_argument("--error-rate", type=_rate, default=0.0,
                      help="share of requests answered 5xx")
    fake.add_argument("--rate-limit-rate", type=_rate, default=0.0,
                      help="share of requests answered 429")
    fake.add_argument("--retry-after", type=_non_negative, default=1.0,
                      help="Retry-After of the injected 429s, in seconds (default 1)")
    fake.add_argument("--drop-rate", type=_rate, default=0.0,
                      help="share of connections dropped without an answer")
    fake.add_argument("--seed", type=int, default=0, help="random seed of the faults")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "fake-server":
            return asyncio.run(_fake_server(args))
        mode = _progress_mode(args.progress, sys.stderr)
        default_level = logging.ERROR if args.command == "demo" else logging.WARNING
        _configure_logging(mode, logging.INFO if args.verbose else default_level)
        if args.command == "demo":
            return asyncio.run(_demo(args, mode))
        return asyncio.run(_send(args, mode))
    except UsageError as error:
        parser.exit(EXIT_USAGE, f"{PROG}: error: {error}\n")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED

