"""Tracking cost inside a real web app: an aiohttp shop with and without tracking, side by side.

    python benchmarks/inapp.py                     # 3 mixes, 20 rounds of 1,000-request slices
    python benchmarks/inapp.py --quick             # 6 rounds of 500
    python benchmarks/inapp.py --baseline DIR      # also "before": voyado_tracking from DIR
    python benchmarks/inapp.py --profile-app FILE  # cProfile the tracking app (pstats in FILE)
    python benchmarks/inapp.py --variant 'b100:max_batch_size=100'  # other settings alongside
    python benchmarks/inapp.py --build-only        # also an app that builds events, enqueues none
    python benchmarks/inapp.py --identify          # also tracking with vt.identify() per request

The processes:

- the loopback sink (``sink.py``) as Voyado;
- one app process per variant, pinned to core 0: an aiohttp shop serving a trivial page.
  ``bare`` reads the request fields (``request.query["contact"]``, ``str(request.url)``, the
  JSON body) and answers; ``tracking`` reads the same fields, then builds one ``ProductView``
  (or ``Cart`` with its ``CartItem``s) and ``enqueue``s it on a ``TrackingBuffer`` with the
  default client and flush settings. ``tracking+identify`` (``--identify``) also finds the
  contact with ``vt.identify(request.query, <the raw Cookie header>, eclub_key=...)`` (every
  request carries Voyado's ``_vaI`` cookie among others; aiohttp's parsed
  ``request.cookies`` alone would cost about 13 µs) and tracks under that id. With
  ``--baseline DIR``, ``before`` is ``tracking`` with
  ``voyado_tracking`` imported from another source tree;
- this process, the load generator, pinned to the other core(s) with the sink: a lean asyncio
  HTTP/1.1 client over raw sockets, keep-alive, a fixed number of connections per app.

Each round, every variant serves one slice of the same requests, in an order that rotates from
round to round, so noise and drift hit every variant alike. An app's CPU is the scheduler's
runtime of all its threads (``/proc/PID/task/*/schedstat``, in ns) over the whole round, so a
background delivery counts wherever it runs; divided by the requests of its slice, that is its
CPU per request. The added CPU is the median over rounds of the paired difference
(tracking - bare) in the same round. Mixes: product views only, cart updates (1-3 items)
only, and 70% views / 30% carts. At exit each app reports its time in garbage collection
per generation (``gc_ms``) and the tracking apps their buffer's counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from _common import EN_DASH, fmt, percentile
from sink import serve_until_stdin_closes

HERE = Path(__file__).resolve().parent
SINK = HERE / "sink.py"
API_KEY = "bench-api-key"
HOST = "shop.example.com"
PAGE = "<!doctype html><title>Shop</title><p>" + "Sneakers, size 42, in stock. " * 6
MIXES = {"views": 1.0, "carts": 0.0, "mixed": 0.7}  # share of product views
TARGET = 0.12  # tracking adds at most 12% to the bare request's CPU
# With contact identification, the design asks for at most +5% over the bare request.
TARGETS = {"tracking+identify": 0.05}
ECLUB_KEY = "DaqfT7Ys6tGqM3zbesEKpmacTJEqBCp2"


class _Discard:
    def enqueue(self, event: object) -> None:
        pass

    async def aclose(self) -> None:
        pass

    stats = None


# -- the app -------------------------------------------------------------------------------


def parse_settings(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``"max_batch_size=100,client.max_requests_per_second=none"`` as keyword arguments of
    FlushSettings and (``client.`` keys) of TrackingClient."""
    settings: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for pair in filter(None, text.split(",")):
        key, _, value = (part.strip() for part in pair.partition("="))
        number = None if value == "none" else float(value) if "." in value else int(value)
        if key.startswith("client."):
            client[key.removeprefix("client.")] = number
        else:
            settings[key] = number
    return settings, client


async def serve(variant: str, sink: str, settings: str = "") -> None:
    from aiohttp import web

    buffer: Any = None
    client: Any = None
    identify: Any = None
    if variant != "bare":
        import voyado_tracking as vt

        ProductView, Cart, CartItem = vt.ProductView, vt.Cart, vt.CartItem
        if variant == "identify":
            identify = vt.identify
        flush_settings, client_settings = parse_settings(settings)
        # Defaults, as a new user has them, unless a --variant says otherwise.
        client = vt.TrackingClient(sink, API_KEY, **client_settings)
        buffer = vt.TrackingBuffer(client, vt.FlushSettings(**flush_settings))
        if variant == "build":  # diagnosis: build the events, enqueue nothing
            buffer = _Discard()

    async def view(request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        contact = request.query["contact"]
        session = request.query.get("session")
        url = str(request.url)
        if identify is not None:
            identity = identify(request.query, request.headers.get("Cookie", ""),
                                eclub_key=ECLUB_KEY)
            contact = identity.contact_id if identity is not None else contact
        if buffer is not None:
            buffer.enqueue(ProductView(sku, contact, category="shoes > sneakers",
                                       session_id=session, url=url, language="sv-SE"))
        return web.Response(text=PAGE, content_type="text/html")

    async def cart(request: web.Request) -> web.Response:
        contact = request.query["contact"]
        url = str(request.url)
        body = await request.json()
        reference, items = body["cart"], body["items"]
        if identify is not None:
            identity = identify(request.query, request.headers.get("Cookie", ""),
                                eclub_key=ECLUB_KEY)
            contact = identity.contact_id if identity is not None else contact
        if buffer is not None:
            buffer.enqueue(Cart(reference, contact, items=[
                CartItem(item["sku"], item["quantity"]) for item in items
            ], url=url, language="sv-SE"))
        return web.Response(text=PAGE, content_type="text/html")

    gc_time = [0.0, 0.0, 0.0]  # seconds in collections of generation 0, 1, 2
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_time[info["generation"]] += time.perf_counter() - gc_started[0]

    gc.callbacks.append(on_gc)
    app = web.Application()
    app.router.add_get("/p/{sku}", view)
    app.router.add_post("/cart", cart)
    runner = await serve_until_stdin_closes(app)  # until the driver closes our stdin
    stats: dict[str, Any] = {"gc_ms": [round(x * 1e3, 1) for x in gc_time]}
    if buffer is not None:
        await buffer.aclose()
        await client.aclose()
        if buffer.stats is not None:
            stats |= {k: getattr(buffer.stats, k) for k in ("enqueued", "sent", "requests",
                                                               "dropped", "dead_lettered")}
    await runner.cleanup()
    print(orjson.dumps(stats).decode(), flush=True)


def app_main(variant: str, sink: str, settings: str, profile: str | None) -> None:
    if profile is None:
        asyncio.run(serve(variant, sink, settings))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(variant, sink, settings))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


# -- the requests --------------------------------------------------------------------------


def contact_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}-0000-4000-8000-{rng.getrandbits(48):012x}"


def make_requests(mix: float, count: int, rng: random.Random) -> list[bytes]:
    """*count* raw HTTP/1.1 requests: product-view pages and cart updates of 1-3 items."""
    requests = []
    for _ in range(count):
        shopper = rng.randrange(5_000)
        contact = f"{shopper:08x}-0000-4000-8000-{shopper * 7919:012x}"
        # Cookies as a shop's visitors send them; only tracking+identify reads them.
        cookie = (f"Cookie: shop_session=s-{shopper:06d}; _ga=GA1.1.{shopper}; "
                  f"_vaI={contact}; _vaI_server={contact}\r\n")
        if rng.random() < mix:
            sku = f"SKU-{rng.randrange(5_000):05d}"
            requests.append(
                f"GET /p/{sku}?contact={contact}&session=s-{shopper:06d} HTTP/1.1\r\n"
                f"Host: {HOST}\r\n{cookie}\r\n".encode()
            )
            continue
        items = [{"sku": f"SKU-{rng.randrange(5_000):05d}", "quantity": rng.randint(1, 3)}
                 for _ in range(rng.randint(1, 3))]
        body = orjson.dumps({"cart": f"cart-{shopper:06d}", "items": items})
        requests.append(
            f"POST /cart?contact={contact} HTTP/1.1\r\nHost: {HOST}\r\n{cookie}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return requests


# -- the load generator --------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request, then its whole response."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.need = -1
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            start = head.find(b"content-length:") + 15
            stop = head.find(b"\r\n", start)
            self.need = end + 4 + int(head[start : stop if stop > 0 else None])
        if len(buffer) >= self.need:
            status = bytes(buffer[9:12])
            del buffer[: self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the app closed the connection"))

    async def request(self, data: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


async def run_slice(
    connections: list[Connection], requests: list[bytes]
) -> tuple[float, list[float]]:
    """Send *requests* over the connections (each one request at a time); wall time, latencies."""
    pending = iter(requests)
    latencies: list[float] = []
    perf = time.perf_counter

    async def worker(connection: Connection) -> None:
        for data in pending:
            t0 = perf()
            status = await connection.request(data)
            latencies.append(perf() - t0)
            if status != b"200":
                raise RuntimeError(f"the app answered {status.decode()}")

    t0 = perf()
    await asyncio.gather(*(worker(c) for c in connections))
    return perf() - t0, latencies


def cpu_ns(pid: int) -> int:
    """The scheduler's runtime of all threads of *pid*, in ns."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with (contextlib.suppress(FileNotFoundError, ProcessLookupError),
              open(f"/proc/{pid}/task/{tid}/schedstat") as f):
            total += int(f.read().split()[0])
    return total


def stat_cpu_ns(pid: int) -> int:
    """utime + stime of *pid* (exited threads included), in ns, at clock-tick resolution."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")


# -- processes -----------------------------------------------------------------------------


def pin_prefix(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def start(
    command: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("PORT "):
        process.kill()
        raise SystemExit(f"{command[-1]} did not start: {line!r}")
    return process, int(line.split()[1])


def stop(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    try:
        out, _ = process.communicate(timeout=60)  # closes its stdin: the process ends
    except subprocess.TimeoutExpired:
        process.kill()
        return {}
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            return dict(orjson.loads(line))
    return {}


class App:
    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int) -> None:
        self.name, self.process, self.port = name, process, port
        self.connections: list[Connection] = []

    async def connect(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, connection = await loop.create_connection(Connection, "127.0.0.1", self.port)
            self.connections.append(connection)

    def close(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()
        self.connections = []


# -- the measurement -----------------------------------------------------------------------


async def measure_mix(apps: list[App], mix: float, rounds: int, size: int,
                      seed: int) -> dict[str, dict[str, list[float]]]:
    rng = random.Random(seed)
    warmup = make_requests(mix, 2 * size, rng)
    for app in apps:
        await run_slice(app.connections, warmup)
    results: dict[str, dict[str, list[float]]] = {
        app.name: {"cpu_us": [], "rps": [], "latency_ms": []} for app in apps
    }
    # Cross-check: threads that exit take their schedstat runtime with them; utime + stime
    # (tick resolution) keep it. The two totals must agree over the whole mix.
    stat_before = {app.name: stat_cpu_ns(app.process.pid) for app in apps}
    sched_total = dict.fromkeys(results, 0)
    for round_ in range(rounds):
        requests = make_requests(mix, size, rng)
        shift = round_ % len(apps)
        order = apps[shift:] + apps[:shift]
        before = {app.name: cpu_ns(app.process.pid) for app in apps}
        for app in order:
            wall, latencies = await run_slice(app.connections, requests)
            results[app.name]["rps"].append(len(requests) / wall)
            results[app.name]["latency_ms"].extend(x * 1e3 for x in latencies)
        for app in apps:
            spent = cpu_ns(app.process.pid) - before[app.name]
            sched_total[app.name] += spent
            results[app.name]["cpu_us"].append(spent / 1e3 / len(requests))
    for app in apps:
        by_stat = stat_cpu_ns(app.process.pid) - stat_before[app.name]
        if abs(by_stat - sched_total[app.name]) > 0.05 * by_stat + 0.05e9:
            print(f"[inapp] warning: {app.name}: schedstat total {sched_total[app.name] / 1e9:.2f}"
                  f" s but utime+stime {by_stat / 1e9:.2f} s", file=sys.stderr)
    return results


def summarise(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    bare = results["bare"]["cpu_us"]
    for name, r in results.items():
        entry = {
            "rps": statistics.median(r["rps"]),
            "p50_ms": percentile(r["latency_ms"], 0.50),
            "p99_ms": percentile(r["latency_ms"], 0.99),
            "cpu_us": statistics.median(r["cpu_us"]),
            "cpu_us_range": [min(r["cpu_us"]), max(r["cpu_us"])],
        }
        if name != "bare":
            added = [a - b for a, b in zip(r["cpu_us"], bare, strict=True)]
            relative = [a / b - 1 for a, b in zip(r["cpu_us"], bare, strict=True)]
            throughput = [a / b for a, b in zip(r["rps"], results["bare"]["rps"], strict=True)]
            entry |= {
                "added_us": statistics.median(added),
                "added_us_range": [min(added), max(added)],
                "added_rel": statistics.median(relative),
                "added_rel_range": [min(relative), max(relative)],
                "throughput_ratio": statistics.median(throughput),
            }
        summary[name] = entry
    return summary


def table(summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| mix | variant | requests/s | p50 ms | p99 ms | app CPU µs/request | added µs/request "
        "| added vs bare | throughput vs bare | target | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mix, summary in summaries.items():
        for name, s in summary.items():
            cpu = (f"{fmt(s['cpu_us'])} ({fmt(s['cpu_us_range'][0])}{EN_DASH}"
                   f"{fmt(s['cpu_us_range'][1])})")
            added = relative = ratio = target = verdict = "—"
            if name != "bare":
                lo, hi = s["added_us_range"]
                added = f"{s['added_us']:+.1f} ({lo:+.1f}{EN_DASH}{hi:+.1f})"
                lo, hi = s["added_rel_range"]
                relative = f"{s['added_rel']:+.1%} ({lo:+.0%}{EN_DASH}{hi:+.0%})"
                ratio = f"{s['throughput_ratio']:.2f}x"
                limit = TARGETS.get(name, TARGET)
                target = f"≤ +{limit:.0%}"
                verdict = "PASS" if s["added_rel"] <= limit else "FAIL"
            lines.append(
                f"| {mix} | {name} | {fmt(s['rps'])} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {cpu} | {added} | {relative} | {ratio} | {target} | {verdict} |"
            )
    return "\n".join(lines)


async def drive(args: argparse.Namespace, apps: list[App]) -> dict[str, dict[str, Any]]:
    for app in apps:
        await app.connect(args.concurrency)
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for index, mix in enumerate(args.mix.split(",")):
            t0 = time.monotonic()
            results = await measure_mix(apps, MIXES[mix], args.rounds, args.slice, 7 + index)
            summaries[mix] = summarise(results)
            print(f"[inapp] {mix}: {time.monotonic() - t0:.1f} s "
                  f"{orjson.dumps(summaries[mix]).decode()[:200]}", file=sys.stderr, flush=True)
    finally:
        for app in apps:
            app.close()
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 rounds of 500 requests")
    parser.add_argument("--rounds", type=int, help="rounds per mix (default 20)")
    parser.add_argument("--slice", type=int, help="requests per slice (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections per app")
    parser.add_argument("--mix", default="views,carts,mixed", help="views, carts, mixed")
    parser.add_argument("--baseline", metavar="DIR", help="also run voyado_tracking from DIR")
    parser.add_argument("--profile-app", metavar="FILE", help="cProfile the tracking app")
    parser.add_argument("--build-only", action="store_true",
                        help="also a variant that builds the events but enqueues nothing")
    parser.add_argument("--identify", action="store_true",
                        help="also a tracking app that identifies the contact per request")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:SETTINGS",
                        help="also a tracking app with these FlushSettings (and TrackingClient "
                        "arguments, prefixed 'client.'), e.g. 'batch100:max_batch_size=100' "
                        "(repeatable)")
    parser.add_argument("--app", choices=["bare", "tracking", "build", "identify"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.app:
        app_main(args.app, args.sink, args.settings, args.profile)
        return
    args.rounds = args.rounds or (6 if args.quick else 20)
    args.slice = args.slice or (500 if args.quick else 1000)

    pinned = bool(pin_prefix(0))
    if pinned:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    me = [sys.executable, str(Path(__file__).resolve())]
    sink, sink_port = start([*pin_prefix(1), sys.executable, str(SINK)])
    sink_url = f"http://127.0.0.1:{sink_port}"
    variants: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("bare", ["--app", "bare"], None),
        ("tracking", ["--app", "tracking"], None),
    ]
    if args.profile_app:
        variants[1] = ("tracking", ["--app", "tracking", "--profile", args.profile_app], None)
    if args.build_only:
        variants.append(("build only", ["--app", "build"], None))
    if args.identify:
        variants.append(("tracking+identify", ["--app", "identify"], None))
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        parse_settings(settings)  # bad input fails here, not in the app
        variants.append((name, ["--app", "tracking", "--settings", settings], None))
    if args.baseline:
        env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
        variants.append(("before", ["--app", "tracking"], env))
    apps: list[App] = []
    started = time.monotonic()
    try:
        for name, extra, env in variants:
            process, port = start([*pin_prefix(0), *me, *extra, "--sink", sink_url], env)
            apps.append(App(name, process, port))
        summaries = asyncio.run(drive(args, apps))
    finally:
        ends = {app.name: stop(app.process) for app in apps}
        stop(sink)
    print(f"\n## In-app tracking cost ({time.monotonic() - started:.0f} s)\n")
    print(f"- {args.rounds} rounds per mix, slices of {args.slice:,} requests, "
          f"{args.concurrency} keep-alive connections per app; "
          + ("apps pinned to core 0, load generator and sink to the others"
             if pinned else "no CPU pinning (taskset not available or 1 core)"))
    for name, stats in ends.items():
        if stats:
            print(f"- {name} app at exit: {orjson.dumps(stats).decode()}")
    print()
    print(table(summaries))
    print()
    print(orjson.dumps({"inapp": summaries}).decode())


if __name__ == "__main__":
    main()
