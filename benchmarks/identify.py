"""Contact identification, side by side in one run: ``vt.identify()`` on the cookie path next
to the hand-written check it replaces, and ``vt.decode_eclub()``.

    .venv/bin/python benchmarks/identify.py [--quick] [--rounds R] [--calls N]

The request is the design's: an ``eclub`` key configured, 5 query parameters (none of them
``vtid`` or ``eclub``) and 10 cookies, ``_vaI`` among them with ``_vaI_server`` equal to it,
as plain dicts (the usual shape of a framework's parsed query and cookies). The comparison is
the hand-written check a shop would write without the library::

    v = q.get("vtid") or c.get("_vaI") or c.get("_vaI_server"); v and GUID.fullmatch(v)

It neither tries ``eclub``, nor every value of a multi-dict, nor says whether the server
cookie is needed, nor builds an object: the difference is what those cost. One round times
every case once (best of 5 repeats of N calls), in an order that rotates between rounds, so
the noise of a shared machine hits every case alike; cells are medians over the rounds, with
their range. ``decode_eclub`` needs ``cryptography`` (the ``eclub`` extra).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import timeit
from collections.abc import Callable

from multidict import MultiDict

import voyado_tracking as vt

EN_DASH = "\u2013"
CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
KEY = "DaqfT7Ys6tGqM3zbesEKpmacTJEqBCp2"
GUID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|[A-Za-z0-9_-]{22}"
)
QUERY = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "black-friday",
         "page": "2", "sort": "price"}
COOKIES = {**{f"shop_cookie_{n}": f"value-{n:04d}-abcdef" for n in range(8)},
           "_vaI": CONTACT, "_vaI_server": CONTACT}
assert len(QUERY) == 5
assert len(COOKIES) == 10


def hand_written() -> object:
    q, c = QUERY, COOKIES
    v = q.get("vtid") or c.get("_vaI") or c.get("_vaI_server")
    return v and GUID.fullmatch(v)


def cookie_path() -> object:
    return vt.identify(QUERY, COOKIES, eclub_key=KEY)


MULTI_QUERY = MultiDict(QUERY)
HEADER = "; ".join(f"{name}={value}" for name, value in COOKIES.items())


def cookie_path_multidict() -> object:
    return vt.identify(MULTI_QUERY, COOKIES, eclub_key=KEY)


def cookie_path_header() -> object:
    return vt.identify(MULTI_QUERY, HEADER, eclub_key=KEY)


def cases() -> dict[str, Callable[[], object]]:
    found = {"hand": hand_written, "identify": cookie_path, "multidict": cookie_path_multidict,
             "header": cookie_path_header}
    identity = cookie_path()
    assert isinstance(identity, vt.Identity)
    assert (identity.source, identity.needs_server_cookie) == ("cookie", False)
    assert cookie_path_header() == identity == cookie_path_multidict()
    try:
        from voyado_tracking.testing import make_eclub

        token = make_eclub(CONTACT, KEY, email="anna@example.com")
    except ImportError:
        print("decode_eclub: n/a (cryptography is not installed)", file=sys.stderr)
        return found
    assert vt.decode_eclub(token, KEY).contact_id == CONTACT
    found["eclub"] = lambda: vt.decode_eclub(token, KEY)
    return found


def measure(rounds: int, calls: int) -> dict[str, list[float]]:
    """µs per call of every case, per round."""
    table = cases()
    names = list(table)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            n = calls // 20 if name == "eclub" else calls
            best = min(timeit.repeat(table[name], number=n, repeat=5))
            results[name].append(best / n * 1e6)
    return results


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}{EN_DASH}{max(values):.2f})"


def report(results: dict[str, list[float]]) -> str:
    hand = statistics.median(results["hand"])
    ours = statistics.median(results["identify"])
    over = statistics.median(i - h for i, h in zip(results["identify"], results["hand"],
                                                    strict=True))
    rows = [
        "| measurement | voyado_tracking | compared with | ratio | target | result |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| `identify()`, cookie path, µs/call | {cell(results['identify'])} | hand-written "
        f"check: {cell(results['hand'])} | {ours / hand:.2f}x | ≤ 3 µs | "
        f"{'PASS' if ours <= 3.0 else 'FAIL'} |",
        f"| `identify()` over the hand-written check, µs/call (median of paired rounds) | "
        f"+{over:.2f} | — | — | ≤ +1 µs | {'PASS' if over <= 1.0 else 'FAIL'} |",
        f"| `identify()`, cookie path, aiohttp `MultiDict` query, µs/call | "
        f"{cell(results['multidict'])} | hand-written check: {cell(results['hand'])} | "
        f"{statistics.median(results['multidict']) / hand:.2f}x | — |  |",
        f"| `identify()`, cookie path, aiohttp `MultiDict` query and the raw `Cookie` header, "
        f"µs/call | {cell(results['header'])} | hand-written check: {cell(results['hand'])} | "
        f"{statistics.median(results['header']) / hand:.2f}x | — |  |",
    ]
    if "eclub" in results:
        eclub = statistics.median(results["eclub"])
        rows.append(
            f"| `decode_eclub()`, µs/call | {cell(results['eclub'])} | hand-written check: "
            f"{cell(results['hand'])} | {eclub / hand:.0f}x | ≤ 30 µs | "
            f"{'PASS' if eclub <= 30.0 else 'FAIL'} |"
        )
    else:
        rows.append("| `decode_eclub()`, µs/call | n/a (cryptography is not installed) | — | — "
                    "| ≤ 30 µs |  |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20,000 calls")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args(argv)
    rounds, calls = (3, 20_000) if args.quick else (args.rounds, args.calls)
    print(f"identify benchmark: {rounds} interleaved rounds of {calls:,} calls "
          f"(decode_eclub: {calls // 20:,}), Python {sys.version.split()[0]}\n")
    print(report(measure(rounds, calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
