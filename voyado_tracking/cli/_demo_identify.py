"""The demo's visitors, identified the way a shop backend must: ``identify()`` per request,
and a ``ContactCache`` lookup by email when a shopper logs in.

Each shopper of the traffic arrives once, seeded: a returning visitor with Voyado's ``_vaI``
cookie, one whose only trace is the server-set ``_vaI_server`` copy, an email link with
``vtid`` or with an ``eclub`` soft-login token (when ``cryptography`` is installed), or a
visitor who logs in and is looked up by email. Their later requests carry the ``_vaI``
cookie Voyado's script set, or, once logged in, the contact id the site knows. Every request
is checked: the identified id must be the shopper's (the short GUID, for ``vtid``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Final

import attrs

from .. import ContactCache, TrackingClient, VoyadoError, identify
from .._wire import Event
from ..testing import FakeVoyado
from ..testing._visits import Visit, arrival, short_guid

__all__ = ["DemoVisitors"]

ECLUB_KEY: Final = "DemoKey0DemoKey1DemoKey2DemoKey3"
_MAX_AGE: Final = 7 * 86_400.0
# How shoppers arrive: weights of the first visit's kind.
_ARRIVALS: Final = {"cookie": 45, "server_cookie": 10, "vtid": 15, "eclub": 10, "login": 20}


def _eclub_available() -> bool:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


@attrs.define
class _Shopper:
    contact_id: str
    email: str
    first: Visit
    site_id: str | None = None  # once logged in
    seen: bool = False


class DemoVisitors:
    """Identifies each event's shopper as a request of theirs would be, and counts sources."""

    def __init__(self, events: Sequence[Event], seed: int, fake: FakeVoyado,
                 client: TrackingClient) -> None:
        rng = random.Random(f"demo-visitors-{seed}")
        kinds = [k for k in _ARRIVALS if k != "eclub" or _eclub_available()]
        weights = [_ARRIVALS[k] for k in kinds]
        self.eclub = "eclub" in kinds
        self._rng = rng
        self._shoppers: dict[str, _Shopper] = {}
        for event in events:
            cid = event.contact_id
            if cid in self._shoppers:
                continue
            email = f"shopper{len(self._shoppers):05d}@example.com"
            fake.add_contact(cid, email=email)
            kind = rng.choices(kinds, weights)[0]
            visit = arrival(kind, cid, email, rng, eclub_key=ECLUB_KEY if self.eclub else None)
            self._shoppers[cid] = _Shopper(cid, email, visit)
        self.cache = ContactCache(client)
        self.sources: Counter[str] = Counter()
        self.wrong = 0
        self.failed_lookups = 0

    @property
    def shoppers(self) -> int:
        return len(self._shoppers)

    async def identify(self, event: Event) -> None:
        """Identify the request behind *event*, count its source and check the id."""
        shopper = self._shoppers[event.contact_id]
        visit = shopper.first if not shopper.seen else Visit(
            "cookie", {"page": "2"}, {"_vaI": shopper.contact_id, "_vaI_server":
                                      shopper.contact_id}, shopper.contact_id)
        shopper.seen = True
        identity = identify(visit.query, visit.cookies, contact_id=shopper.site_id,
                            eclub_key=ECLUB_KEY if self.eclub else None,
                            eclub_max_age=_MAX_AGE)
        found: str | None
        source: str
        if identity is not None:
            found, source = identity.contact_id, identity.source
        elif visit.email is not None:
            try:
                found = await self.cache.email(visit.email)
            except VoyadoError:  # Voyado unreachable: try again at the next request
                self.failed_lookups += 1
                shopper.seen = False
                self.sources["unidentified"] += 1
                return
            source = "email lookup"
            shopper.site_id = found  # logged in: the site knows the contact from now on
        else:
            found, source = None, "unidentified"
        self.sources[source] += 1
        expected = short_guid(shopper.contact_id) if source == "vtid" else shopper.contact_id
        if found != expected:
            self.wrong += 1

    def check(self) -> tuple[bool, str]:
        # Only seed-determined numbers here: which lookups meet a fault depends on timing.
        total = sum(self.sources.values())
        return (self.wrong == 0,
                f"every identified request of {total} named its own shopper"
                + (f" ({self.wrong} named someone else)" if self.wrong else ""))

    def report_lines(self) -> list[str]:
        order = ("cookie", "server_cookie", "vtid", "eclub", "email lookup", "site",
                 "unidentified")
        counts = ", ".join(f"{name} {self.sources[name]}" for name in order
                           if self.sources[name])
        stats = self.cache.stats
        return [
            f"  identified by            {counts}",
            f"{' ' * 37}({self.shoppers} shoppers; email lookups: {stats.requests} requests, "
            f"{stats.hits} answered from the cache"
            + (f", {self.failed_lookups} failed under the faults and were retried"
               if self.failed_lookups else "")
            + ("" if self.eclub else "; no eclub links: cryptography is not installed") + ")",
        ]
