"""The fake's contacts and Voyado's lookup endpoint, ``GET /api/v3/contacts/id``.

A mixin of :class:`FakeVoyado`: contacts registered with :meth:`add_contact`, looked up by
exactly one of ``email``, ``mobilePhone``, ``socialSecurityNumber``, ``customKey`` or ``any``
(optionally narrowed by ``contactType``), answered as Voyado does: 200 with the id as a JSON
string, 400 ``InvalidEmailAddress`` (an email without ``@``) or a bad query, 404
``ContactNotFound``, 409 ``MultipleMatches``. Lookups share the fake's ``rate_limit`` window,
its header checks and its scripted faults; the request log keeps their path without the
query (the value is personal data), and ``lookups`` counts the lookups answered.

Emails match case-insensitively, the other keys exactly. An error body echoes the value it
refused, as real APIs do, so tests can check that the client masks it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

import attrs
import orjson
from aiohttp import web

from .._models import _GUID
from .._wire import USER_AGENT_PATTERN
from ._faults import Fault

if TYPE_CHECKING:
    from ._fake import FakeVoyado

__all__ = ["LOOKUP", "Contact", "ContactBook", "load_contacts"]

LOOKUP: Final = "/api/v3/contacts/id"
_KEYS: Final = ("email", "mobilePhone", "socialSecurityNumber", "customKey", "any")


@attrs.frozen
class Contact:
    contact_id: str
    email: str | None = attrs.field(default=None, repr=False)
    mobile_phone: str | None = attrs.field(default=None, repr=False)
    social_security_number: str | None = attrs.field(default=None, repr=False)
    custom_key: str | None = attrs.field(default=None, repr=False)
    contact_type: str = "Member"

    def matches(self, name: str, value: str) -> bool:
        email = self.email is not None and self.email.lower() == value.lower()
        fields = {
            "email": email,
            "mobilePhone": self.mobile_phone == value,
            "socialSecurityNumber": self.social_security_number == value,
            "customKey": self.custom_key == value,
        }
        return any(fields.values()) if name == "any" else fields[name]


class ContactBook:
    """The fake's contact registry and lookup endpoint (mixed into FakeVoyado)."""

    contacts: list[Contact]
    lookups: int

    def _init_contacts(self) -> None:
        self.contacts = []
        self.lookups = 0

    def add_contact(
        self,
        contact_id: str | uuid.UUID | None = None,
        *,
        email: str | None = None,
        mobile_phone: str | None = None,
        social_security_number: str | None = None,
        custom_key: str | None = None,
        contact_type: str = "Member",
    ) -> str:
        """Register a contact the lookup endpoint will find; returns its id (a new GUID
        when none is given). Two contacts may share an email: looking it up answers 409."""
        cid = str(uuid.uuid4()) if contact_id is None else str(contact_id)
        if not _GUID.fullmatch(cid):
            raise ValueError("contact_id must be a GUID or a 22-character short GUID")
        self.contacts.append(Contact(cid, email, mobile_phone, social_security_number,
                                     custom_key, contact_type))
        return cid

    def _answer_lookup(self, request: web.Request) -> tuple[int, bytes]:
        """Status and body of a lookup, as Voyado would answer it."""
        if request.headers.get("apikey") != _fake(self).api_key:
            return 401, _error("Unauthorized", "missing or invalid apikey header")
        if not USER_AGENT_PATTERN.fullmatch(request.headers.get("User-Agent", "")):
            return 400, _error("InvalidUserAgent", "User-Agent must look like 'System/Version'")
        given = [(name, request.query.getall(name)) for name in _KEYS if name in request.query]
        if len(given) != 1 or len(given[0][1]) != 1 or not given[0][1][0]:
            return 400, _error("InvalidQuery", f"give exactly one of {', '.join(_KEYS)}")
        name, (value,) = given[0]
        if name == "email" and "@" not in value:
            return 400, _error("InvalidEmailAddress", f"invalid email address: {value}")
        kind = request.query.get("contactType")
        found = [c.contact_id for c in self.contacts
                 if c.matches(name, value) and (kind is None
                                                 or c.contact_type.lower() == kind.lower())]
        if not found:
            return 404, _error("ContactNotFound", "no contact matches")
        if len(found) > 1:
            return 409, _error("MultipleMatches", f"{len(found)} contacts match")
        return 200, orjson.dumps(found[0])

    async def _handle_lookup(self, request: web.Request) -> web.StreamResponse:
        fake = _fake(self)
        at = time.monotonic()
        path = request.path  # never the query: it holds the looked-up value
        if (retry_after := fake._retry_after(at)) is not None:
            fake._record(request, path, b"", 429, 0, at, rate_limited=True)
            return web.Response(status=429, body=_error("TooManyRequests", "rate limit"),
                                headers={"Retry-After": str(retry_after)},
                                content_type="application/json")
        if fake._open is not None and not fake._open.is_set():
            await fake._open.wait()
        fault = fake._draw_fault()
        if fake.latency:
            await asyncio.sleep(fake.latency)
        if fault is not None and not (fault.process and fault.status == 200):
            return await fake._lookup_fault(request, path, fault, at)
        status, body = self._answer_lookup(request)
        self.lookups += 1
        fake._record(request, path, b"", status, 0, at)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _lookup_fault(
        self, request: web.Request, path: str, fault: Fault, at: float
    ) -> web.StreamResponse:
        fake = _fake(self)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            fake._faults_injected["drop"] += 1
            fake._record(request, path, b"", 0, 0, at)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        fake._faults_injected[str(fault.status)] += 1
        fake._record(request, path, b"", fault.status, 0, at)
        return fake._fault_response(fault)


def load_contacts(lines: Iterable[str]) -> list[dict[str, str]]:
    """Contacts from JSON Lines (one object a line, blank lines skipped): ``contactId``
    (optional), ``email``, ``mobilePhone``, ``socialSecurityNumber``, ``customKey``,
    ``contactType``; the keyword arguments of :meth:`ContactBook.add_contact`. Raises
    ValueError naming the line of the first bad one."""
    names = {"contactId": "contact_id", "email": "email", "mobilePhone": "mobile_phone",
             "socialSecurityNumber": "social_security_number", "customKey": "custom_key",
             "contactType": "contact_type"}
    contacts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ValueError(f"line {number}: not valid JSON") from None
        if not isinstance(data, dict) or not data:
            raise ValueError(f"line {number}: not a JSON object with contact fields")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"line {number}: unknown field {unknown[0]!r}")
        if not all(isinstance(v, str) and v for v in data.values()):
            raise ValueError(f"line {number}: every field must be a non-empty string")
        if "contactId" in data and not _GUID.fullmatch(data["contactId"]):
            raise ValueError(f"line {number}: contactId is not a GUID")
        contacts.append({names[k]: v for k, v in data.items()})
    return contacts


def _fake(book: ContactBook) -> FakeVoyado:
    return cast("FakeVoyado", book)


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"errorCode": code, "message": message})
