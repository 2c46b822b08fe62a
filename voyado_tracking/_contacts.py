"""Contact lookup (``GET /api/v3/contacts/id``) and ContactCache, its cache for request handlers.

A lookup goes through the client's transport like every tracking call: the same session and
headers, the same rate limiter (in-process or ``RedisRateLimiter``) and the same 429 pause,
so tracking and lookups together stay inside the API key's budget. It is retried by the
client's :class:`RetryPolicy` (a GET is safe to repeat).

The looked-up value is personal data (an email, a phone number, a personal number): it is
sent in the query string and appears nowhere else. Errors and ``ApiError.endpoint`` name the
path without the query, an echoed value in an error body reads ``***``, logs name the path
only, and :class:`ContactCache` keeps values only as the keys of its entries.

:class:`ContactCache` is for request handlers: emails are normalised (stripped, lower-cased)
so one person is one entry; concurrent lookups of one key share one request; found ids are
kept ``ttl`` seconds, "no such contact" answers (404, 400, 409) ``negative_ttl``; and a
lookup never waits more than ``timeout`` for a request slot or a 429 pause: a handler must
not queue behind a forwarder's backlog (it gets :class:`RateLimitError` and may go on
without an id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from ._errors import ApiError, MultipleMatchesError, RateLimitError, VoyadoError
from ._models import _GUID
from ._validators import check_int_at_least, check_positive

if TYPE_CHECKING:
    from ._client import TrackingClient

__all__ = ["LOOKUP", "ContactCache", "ContactCacheStats", "find_contact_id", "lookup_params"]

log = logging.getLogger("voyado_tracking")

LOOKUP: Final = "/api/v3/contacts/id"
_NAMES: Final = {
    "email": "email",
    "mobile_phone": "mobilePhone",
    "social_security_number": "socialSecurityNumber",
    "custom_key": "customKey",
    "any": "any",
}
_UNDECODABLE: Final = "undecodable lookup answer: not a JSON string holding a contact id"


def lookup_params(contact_type: str | None = None, **keys: str | None) -> dict[str, str]:
    """The query of a lookup: exactly one key, given as a non-empty string, and maybe
    ``contactType``. Errors never repeat the value."""
    given = {name: value for name, value in keys.items() if value is not None}
    if len(given) != 1:
        raise ValueError(
            "find_contact_id() takes exactly one of email, mobile_phone, "
            f"social_security_number, custom_key or any (got {len(given)})"
        )
    ((name, value),) = given.items()
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    params = {_NAMES[name]: value}
    if contact_type is not None:
        if not isinstance(contact_type, str) or not contact_type.strip():
            raise ValueError("contact_type must be a non-empty string")
        params["contactType"] = contact_type
    return params


def _parse(raw: bytes, endpoint: str) -> str:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if type(value) is str and _GUID.fullmatch(value):
        return value
    raise ApiError(200, _UNDECODABLE, endpoint=endpoint)


async def find_contact_id(
    client: TrackingClient,
    params: dict[str, str],
    *,
    max_pause: float,
    slot_timeout: float | None = None,
    on_send: Callable[[], None] | None = None,
) -> str | None:
    """Look a contact up, retrying as the client's policy allows; None when Voyado knows
    none (404).

    *max_pause*: the longest 429 pause to wait for; *slot_timeout*: the longest wait for a
    request slot. When the rate limiter refuses (RateLimitError before anything was sent),
    that is final: retrying would wait longer than the caller allowed.
    """
    transport, policy = client.transport, client.retry
    started = time.monotonic()
    attempts = 0
    sent = False

    def sending() -> None:
        nonlocal sent
        sent = True
        if on_send is not None:
            on_send()

    while True:
        attempts += 1
        sent = False
        try:
            raw = await transport.get(LOOKUP, params, max_pause=max_pause,
                                      slot_timeout=slot_timeout, on_send=sending)
        except ApiError as error:
            if error.status == 404:
                return None
            if error.status == 409:
                raise MultipleMatchesError(409, error.body, endpoint=error.endpoint) from None
            if isinstance(error, RateLimitError) and not sent:
                raise
            failure: VoyadoError = error
        except VoyadoError as error:
            failure = error
        else:
            return _parse(raw, client.base_url + LOOKUP)
        if isinstance(failure, RateLimitError) and (failure.retry_after or 0.0) > max_pause:
            raise failure  # Voyado asked for a longer pause than the caller will wait
        wait = policy.next_wait(failure, attempts, time.monotonic() - started, patient=False)
        if wait is None:
            raise failure
        log.info("GET %s failed (%s); retry %d in %.2fs", LOOKUP, failure, attempts, wait)
        await asyncio.sleep(wait)


@attrs.frozen
class ContactCacheStats:
    """Counters of a :class:`ContactCache`: ``hits`` (answered from the cache), ``misses``
    (a lookup was needed), ``requests`` (sent to Voyado, retries included), ``errors``
    (lookups that raised), and ``entries`` (kept now)."""

    hits: int
    misses: int
    requests: int
    errors: int
    entries: int

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


_Key = tuple[str, str]


class ContactCache:
    """Contact ids by email, phone number or custom key, looked up once and kept.

    ``await cache.email(address)`` → the contact id, or None when Voyado has no such contact
    (or several, or calls the address invalid). Other failures (timeouts, 5xx after retries,
    :class:`RateLimitError` when no request slot came within ``timeout`` seconds) are raised
    to every caller waiting for that key and are not kept.
    """

    def __init__(
        self,
        client: TrackingClient,
        *,
        ttl: float = 3600.0,
        negative_ttl: float = 300.0,
        max_entries: int = 100_000,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.ttl = check_positive("ttl", ttl)
        self.negative_ttl = check_positive("negative_ttl", negative_ttl)
        self.max_entries = check_int_at_least("max_entries", max_entries, 1)
        self.timeout = check_positive("timeout", timeout)
        self._clock = clock
        self._entries: OrderedDict[_Key, tuple[float, str | None]] = OrderedDict()
        self._inflight: dict[_Key, asyncio.Task[str | None]] = {}
        self._hits = self._misses = self._requests = self._errors = 0

    def __repr__(self) -> str:
        return (f"voyado_tracking.ContactCache(entries={len(self._entries)}, "
                f"ttl={self.ttl:g}, negative_ttl={self.negative_ttl:g})")

    @property
    def stats(self) -> ContactCacheStats:
        return ContactCacheStats(self._hits, self._misses, self._requests, self._errors,
                                 len(self._entries))

    async def email(self, address: str) -> str | None:
        """The contact id of the email *address* (stripped and lower-cased first)."""
        return await self._get("email", _text("address", address).strip().lower())

    async def mobile_phone(self, number: str) -> str | None:
        """The contact id of the mobile phone *number* (stripped of surrounding space)."""
        return await self._get("mobile_phone", _text("number", number).strip())

    async def custom_key(self, key: str) -> str | None:
        """The contact id of the custom key *key* (stripped of surrounding space)."""
        return await self._get("custom_key", _text("key", key).strip())

    def clear(self) -> None:
        """Forget every kept answer (lookups in flight still finish)."""
        self._entries.clear()

    async def _get(self, kind: str, value: str) -> str | None:
        if not value:
            return None
        key = (kind, value)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key)
                self._hits += 1
                return entry[1]
            del self._entries[key]
        self._misses += 1
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key))
            self._inflight[key] = task
            task.add_done_callback(_retrieve)
        # Shielded: a caller that is cancelled (its request went away) leaves the lookup to
        # the other callers waiting for it, and its answer to the cache.
        return await asyncio.shield(task)

    async def _fetch(self, key: _Key) -> str | None:
        kind, value = key
        try:
            found = await find_contact_id(
                self._client, lookup_params(**{kind: value}),
                max_pause=self.timeout, slot_timeout=self.timeout, on_send=self._sent,
            )
            ttl = self.ttl if found is not None else self.negative_ttl
        except MultipleMatchesError:
            log.warning("contact lookup by %s: several contacts match one value (409); "
                        "not identified for %g s", kind, self.negative_ttl)
            found, ttl = None, self.negative_ttl
        except ApiError as error:
            if error.status != 400:
                self._errors += 1
                raise
            found, ttl = None, self.negative_ttl  # e.g. InvalidEmailAddress
        except BaseException:
            self._errors += 1
            raise
        finally:
            del self._inflight[key]
        self._store(key, found, ttl)
        return found

    def _sent(self) -> None:
        self._requests += 1

    def _store(self, key: _Key, found: str | None, ttl: float) -> None:
        entries = self._entries
        entries[key] = (self._clock() + ttl, found)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Every waiter may have gone away: mark the error seen, it was raised to them anyway.
    if not task.cancelled():
        task.exception()
