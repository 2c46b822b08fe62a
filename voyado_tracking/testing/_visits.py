"""Simulated visits to a shop, as they reach its backend: query parameters and cookies.

Each :class:`Visit` says how the visitor can be identified and who it must come out as:
email links with ``vtid`` (the contact's short GUID) or an ``eclub`` soft-login token,
returning visitors with Voyado's ``_vaI`` cookie or only the server-set ``_vaI_server``
copy, logged-in shoppers the site knows, logins to look up by email, and junk (``""``,
``"undefined"``, ``"null"``, truncated ids, a token made with another key). Seeded: the same
arguments give the same visits. Used by the demo and by the identification tests.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Final

import attrs

__all__ = ["KINDS", "Visit", "arrival", "short_guid", "simulated_contacts", "simulated_visits"]

KINDS: Final = ("cookie", "server_cookie", "vtid", "eclub", "site", "login", "unknown_login",
                "junk")
_JUNK: Final = ("", "undefined", "null", "0", "3fa85f64-5717-4562-b3fc", "not-a-contact-id")
_OTHER_KEY: Final = "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"


@attrs.frozen
class Visit:
    """One request: its ``query`` and ``cookies``, the id the site knows (``site_id``, a
    logged-in shopper), the ``email`` a login gives, and the ``expected`` contact id (None:
    nobody can be identified)."""

    kind: str
    query: dict[str, str]
    cookies: dict[str, str]
    expected: str | None
    site_id: str | None = None
    email: str | None = attrs.field(default=None, repr=False)


def short_guid(contact_id: str) -> str:
    """The 22-character short form of a GUID (URL-safe base64 of its .NET byte order)."""
    raw = uuid.UUID(contact_id).bytes_le
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def simulated_contacts(seed: int, count: int) -> list[tuple[str, str]]:
    """*count* contacts as ``(contact_id, email)``, seeded."""
    rng = random.Random(f"contacts-{seed}")
    return [(str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"shopper{n:04d}@example.com")
            for n in range(count)]


def _noise(rng: random.Random) -> dict[str, str]:
    cookies = {f"shop_{n}": f"{rng.getrandbits(40):x}" for n in range(rng.randint(2, 8))}
    if rng.random() < 0.5:
        cookies["_vaI"] = rng.choice(_JUNK)
    return cookies


def arrival(
    kind: str,
    contact_id: str,
    email: str,
    rng: random.Random,
    *,
    eclub_key: str | None = None,
    now: datetime | None = None,
) -> Visit:
    """A visit of *kind* by the contact *contact_id* (with *email*)."""
    query = {"utm_source": "newsletter", "page": str(rng.randint(1, 5))}
    cookies = _noise(rng)
    if kind == "cookie":
        cookies["_vaI"] = contact_id
        return Visit(kind, query, cookies, contact_id)
    if kind == "server_cookie":
        cookies["_vaI"] = rng.choice(_JUNK)  # Safari dropped the script's cookie
        cookies["_vaI_server"] = contact_id
        return Visit(kind, query, cookies, contact_id)
    if kind == "vtid":
        short = short_guid(contact_id)
        return Visit(kind, {**query, "vtid": short}, cookies, short)
    if kind == "eclub":
        if eclub_key is None:
            raise ValueError("eclub visits need eclub_key")
        from ._eclub import make_eclub

        token = make_eclub(contact_id, eclub_key, email=email, created=now)
        return Visit(kind, {**query, rng.choice(("eclub", "eClub")): token}, cookies, contact_id)
    if kind == "site":
        cookies["_vaI"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))  # someone else
        return Visit(kind, query, cookies, contact_id, site_id=contact_id)
    if kind in ("login", "unknown_login"):
        typed = rng.choice((email, email.upper(), f" {email} ", email.capitalize()))
        expected = contact_id if kind == "login" else None
        return Visit(kind, query, cookies, expected, email=typed)
    if kind == "junk":
        query["vtid"] = rng.choice(_JUNK)
        cookies["_vaI"] = rng.choice(_JUNK)
        cookies["_vaI_server"] = rng.choice(_JUNK)
        if eclub_key is not None:
            from ._eclub import make_eclub

            stale = (now or datetime.now(timezone.utc)) - timedelta(days=90)
            query["eclub"] = rng.choice((
                make_eclub(contact_id, _OTHER_KEY), "%%%not-base64", "AAAA",
                make_eclub(contact_id, eclub_key, created=stale),
            ))
        return Visit(kind, query, cookies, None)
    raise ValueError(f"unknown visit kind {kind!r}")


def simulated_visits(
    seed: int,
    count: int,
    contacts: Sequence[tuple[str, str]],
    *,
    eclub_key: str | None = None,
    kinds: Sequence[str] = KINDS,
) -> list[Visit]:
    """*count* visits by *contacts* (``(contact_id, email)``), of the *kinds* drawn evenly
    (``eclub`` only with *eclub_key*). ``unknown_login`` uses emails nobody has."""
    rng = random.Random(f"visits-{seed}")
    usable = [k for k in kinds if k != "eclub" or eclub_key is not None]
    now = datetime.now(timezone.utc)
    visits = []
    for n in range(count):
        kind = rng.choice(usable)
        contact_id, email = rng.choice(contacts)
        if kind == "unknown_login":
            email = f"nobody{n % 7}@example.org"
        visits.append(arrival(kind, contact_id, email, rng, eclub_key=eclub_key, now=now))
    return visits
