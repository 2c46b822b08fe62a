"""Who is this visitor? The contact id of a request, found the way Voyado's browser script does.

Engage acts only on events that carry a contact id. Voyado's script finds it in the browser;
a shop that sends events from its backend must find it itself, from the request:

1. the contact id the site itself knows (a logged-in shopper): ``source="site"``. It comes
   first because on a shared browser the cookies may still name the previous person;
2. the ``eclub`` query parameter: a soft-login token from an email link, encrypted with the
   tenant's shared key (only with ``eclub_key``; see :func:`decode_eclub`);
3. the ``vtid`` query parameter: the contact's short GUID on an email link;
4. the ``_vaI`` cookie, which Voyado's script sets;
5. the ``_vaI_server`` cookie, the site's server-set copy of ``_vaI`` that outlives Safari's
   7-day cap on cookies set by scripts (:func:`server_cookie_header`).

The first *valid* value wins: a GUID in any case or a 22-character short GUID, exactly what
the models accept as ``contact_id``. Browsers send junk (``""``, ``"undefined"``, ``"null"``,
truncated values, a damaged or stale ``eclub``): junk is skipped silently, never an error.

:func:`identify` is pure (no I/O) and cheap on the common path, a returning visitor with the
``_vaI`` cookie: it is meant to run on every request. Looking a contact up by email is I/O
and lives in ``_contacts`` (``ContactCache``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import product
from operator import itemgetter
from typing import Any, Final, Literal
from uuid import UUID

from ._errors import InvalidSoftLoginError, shorten
from ._models import _GUID

__all__ = ["SERVER_COOKIE", "VOYADO_COOKIE", "Identity", "identify", "server_cookie_header"]

Source = Literal["site", "eclub", "vtid", "cookie", "server_cookie"]
SOURCES: Final = ("site", "eclub", "vtid", "cookie", "server_cookie")
VOYADO_COOKIE: Final = "_vaI"
SERVER_COOKIE: Final = "_vaI_server"
# "eclub" in every mix of cases (Voyado writes "eClub"): one set lookup per query name.
_ECLUB_NAMES: Final = frozenset(
    "".join(chars) for chars in product(*((c, c.upper()) for c in "eclub"))
)
_VAI_KEY: Final = VOYADO_COOKIE + "="
_SERVER_KEY: Final = SERVER_COOKIE + "="
# One year, as Voyado recommends for the server-set copy of _vaI.
_SERVER_COOKIE_MAX_AGE: Final = 31_536_000

_valid = _GUID.fullmatch


class Identity(tuple):  # type: ignore[type-arg]
    """The contact a request belongs to, and where that was found. Frozen.

    ``source`` is ``"site"``, ``"eclub"``, ``"vtid"``, ``"cookie"`` or ``"server_cookie"``.
    ``needs_server_cookie`` is true when Voyado's ``_vaI`` cookie holds a valid id (so the
    visitor consented to Voyado's script) and the ``_vaI_server`` cookie is missing or does
    not hold ``contact_id``: set it on the response with :func:`server_cookie_header`.
    """

    # A tuple underneath, not an attrs class: identify() builds one per request, and a
    # frozen attrs instance costs three times as much to make (0.48 µs against 0.15 µs).
    __slots__ = ()

    def __new__(
        cls, contact_id: str | UUID, source: Source, *, needs_server_cookie: bool = False
    ) -> Identity:
        contact_id = _check_contact_id(contact_id)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {shorten(source)}")
        if type(needs_server_cookie) is not bool:
            raise TypeError("needs_server_cookie must be a bool")
        return _make(cls, (contact_id, source, needs_server_cookie))

    contact_id: str = property(itemgetter(0))  # type: ignore[assignment]
    source: Source = property(itemgetter(1))  # type: ignore[assignment]
    needs_server_cookie: bool = property(itemgetter(2))  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"voyado_tracking.Identity(contact_id={self[0]!r}, source={self[1]!r}, "
                f"needs_server_cookie={self[2]!r})")

    def __eq__(self, other: object) -> bool:
        return type(other) is Identity and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __getnewargs_ex__(self) -> tuple[tuple[str, str], dict[str, bool]]:
        return (self[0], self[1]), {"needs_server_cookie": self[2]}


_make = tuple.__new__


def _check_contact_id(value: object) -> str:
    if isinstance(value, UUID):
        return str(value)
    if not (type(value) is str and _valid(value)):
        raise ValueError(
            f"contact_id must be a GUID or a 22-character short GUID, got {shorten(value)}"
        )
    return value


def _identity(contact_id: str, source: Source, needs_server_cookie: bool) -> Identity:
    # Values identify() has already checked: no validation on the per-request path.
    identity: Identity = _make(Identity, (contact_id, source, needs_server_cookie))
    return identity


def _next_cookie(header: str, key: str, at: int) -> int:
    """Where the value of the next cookie named *key* (``"name="``) starts in a raw
    ``Cookie`` header, searching from *at*; -1 when there is none. Whole names only: a
    ``_vaI=`` inside ``x_vaI=`` does not count."""
    at = header.find(key, at)
    while at != -1:
        before = at - 1
        while before >= 0 and header[before] in " \t":
            before -= 1
        if before < 0 or header[before] == ";":
            return at + len(key)
        at = header.find(key, at + 1)
    return -1


def _cookie_value(header: str, start: int) -> str:
    end = header.find(";", start)
    return (header[start:] if end == -1 else header[start:end]).strip(' \t"')


def _header_holds(header: str, key: str, value: str) -> bool:
    at = _next_cookie(header, key, 0)
    while at != -1:
        if _cookie_value(header, at) == value:
            return True
        at = _next_cookie(header, key, at)
    return False


class _CookieHeader:
    """A raw ``Cookie`` header read as a multi-dict, for the names identify() asks about.

    Frameworks parse every cookie into objects (aiohttp's ``request.cookies`` costs about
    13 µs for four cookies); identify() needs two names, found with ``str.find``.
    """

    __slots__ = ("_header",)

    def __init__(self, header: str) -> None:
        self._header = header

    def getall(self, name: str, default: Iterable[str] = ()) -> list[str]:
        header, key = self._header, name + "="
        values = []
        at = _next_cookie(header, key, 0)
        while at != -1:
            values.append(_cookie_value(header, at))
            at = _next_cookie(header, key, at)
        return values


def _values(mapping: Any, name: str) -> Iterable[object]:
    """Every value of *name*: multi-dicts (aiohttp ``getall``, werkzeug and Django
    ``getlist``) give them all, a plain mapping its one."""
    getall = getattr(mapping, "getall", None)
    if getall is not None:
        values: Iterable[object] = getall(name, ())
        return values
    getlist = getattr(mapping, "getlist", None)
    if getlist is not None:
        values = getlist(name)
        return values
    value = mapping.get(name)
    return () if value is None else (value,)


def _first_valid(mapping: Any, name: str) -> str | None:
    if type(mapping) is dict:
        value = mapping.get(name)
        return value if type(value) is str and _valid(value) else None
    for value in _values(mapping, name):
        if type(value) is str and _valid(value):
            return value
    return None


def _held(mapping: Any, name: str, contact_id: str) -> bool:
    """Whether a value of *name* in *mapping* is *contact_id*."""
    if type(mapping) is dict:
        return mapping.get(name) == contact_id
    return any(value == contact_id for value in _values(mapping, name))


def _eclub_names(query: Any) -> list[str]:
    """The names of *query* that are ``eclub`` in any case, each once."""
    return [name for name in dict.fromkeys(query) if name in _ECLUB_NAMES]


def _from_eclub(query: Any, names: list[str], key: str, max_age: float | None) -> str | None:
    """The contact id of the first usable ``eclub`` token, else None."""
    from ._eclub import check_key, decode_eclub

    check_key(key)  # a wrong key is the site's mistake: loud, unlike a bad token
    for name in names:
        for token in _values(query, name):
            if type(token) is not str:
                continue
            try:
                return decode_eclub(token, key, max_age=max_age).contact_id
            except InvalidSoftLoginError:
                continue  # forwarded, stale or damaged links are junk like any other
    return None


def identify(
    query: Mapping[str, Any],
    cookies: Mapping[str, Any] | str,
    *,
    contact_id: str | UUID | None = None,
    eclub_key: str | None = None,
    eclub_max_age: float | None = None,
) -> Identity | None:
    """The contact of a request from its query parameters and cookies, or None.

    *query* and *cookies* are string mappings (multi-dicts welcome: every value of a name is
    tried); *cookies* may also be the raw ``Cookie`` header, cheaper than a framework's
    parsed cookies when nothing else needs them. *contact_id* is the id the site knows for a
    logged-in shopper; *eclub_key* the shared soft-login key (``eclub`` tokens are ignored
    without it) and *eclub_max_age* the oldest link, in seconds, to accept. Pure: no I/O, no
    clock unless an ``eclub`` is read.
    """
    # The common request first, inline: a returning visitor with _vaI, no site id, no vtid
    # and no eclub (a set lookup per query name, in C), cookies as a dict or the raw header.
    # It is the per-request cost; benchmarks/identify.py holds it next to the hand-written
    # check. Anything else takes the general path below, which decides alike
    # (tests/test_identify.py checks that it does).
    if contact_id is None and "vtid" not in query and (
        eclub_key is None or _ECLUB_NAMES.isdisjoint(query)
    ):
        if type(cookies) is dict:
            cookie = cookies.get(VOYADO_COOKIE)
            if type(cookie) is str and _valid(cookie):
                needs = cookies.get(SERVER_COOKIE) != cookie
                return _make(Identity, (cookie, "cookie", needs))
        elif type(cookies) is str:  # the raw header: no object, no list per request
            at = _next_cookie(cookies, _VAI_KEY, 0)
            while at != -1:
                cookie = _cookie_value(cookies, at)
                if _valid(cookie):
                    needs = not _header_holds(cookies, _SERVER_KEY, cookie)
                    return _make(Identity, (cookie, "cookie", needs))
                at = _next_cookie(cookies, _VAI_KEY, at)
    if type(cookies) is str:
        cookies = _CookieHeader(cookies)  # type: ignore[assignment]
    if type(cookies) is dict:
        cookie = cookies.get(VOYADO_COOKIE)
        if not (type(cookie) is str and _valid(cookie)):
            cookie = None
    else:
        cookie = _first_valid(cookies, VOYADO_COOKIE)
    found: str | None = None
    source: Source = "site"
    if contact_id is not None:
        if isinstance(contact_id, UUID):
            contact_id = str(contact_id)
        if type(contact_id) is str and _valid(contact_id):
            found = contact_id
    if found is None and eclub_key is not None and not _ECLUB_NAMES.isdisjoint(query):
        found = _from_eclub(query, _eclub_names(query), eclub_key, eclub_max_age)
        source = "eclub"
    if found is None:
        found = _first_valid(query, "vtid")
        source = "vtid"
        if found is None:
            if cookie is None:
                found = _first_valid(cookies, SERVER_COOKIE)
                return None if found is None else _identity(found, "server_cookie", False)
            found = cookie
            source = "cookie"
    return _identity(found, source,
                     cookie is not None and not _held(cookies, SERVER_COOKIE, found))


def server_cookie_header(contact_id: str | UUID, *, secure: bool = True) -> str:
    """The ``Set-Cookie`` value that stores *contact_id* in ``_vaI_server`` for a year.

    Not HttpOnly: Voyado's script reads it to restore ``_vaI``. Set it only when
    :attr:`Identity.needs_server_cookie` is true, and never on a response a shared cache may
    keep (``Cache-Control: public`` or ``s-maxage``): the cache would hand one visitor's id
    to others. ``secure=False`` only for plain-http development.
    """
    contact_id = _check_contact_id(contact_id)
    header = (f"{SERVER_COOKIE}={contact_id}; Max-Age={_SERVER_COOKIE_MAX_AGE}; Path=/; "
              "SameSite=Lax")
    return header + "; Secure" if secure else header
