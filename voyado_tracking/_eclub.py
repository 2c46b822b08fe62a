"""Voyado's soft login: the ``eclub`` token of an email link, decrypted with the shared key.

The format, as Voyado documents it: URL-safe base64 (padding optional) of a 16-byte IV
followed by AES-256-CBC ciphertext, keyed with the ASCII bytes of a 32-character shared key
(``[A-Za-z0-9]``), PKCS#7-padded, of a UTF-8 JSON object such as ``{"contactId": ...,
"email": ..., "dateTime": "2018-07-11T11:19:54Z", "discoveryKey": ..., "id": ...}``.

Two security rules shape this module:

- Every failure of the decryption itself (padding, UTF-8, JSON, no contact id) raises one and
  the same message. Distinct messages would let anyone who can send tokens and read the
  answers decrypt a token byte by byte (a padding oracle).
- AES-CBC has no integrity check: a token can be altered without the key going wrong, and a
  link is easily forwarded. A soft login identifies a visitor for tracking; it must never log
  anyone in. ``max_age`` bounds how long a link keeps working.

Needs ``cryptography`` (the ``eclub`` extra), imported on the first decode.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import attrs
import orjson

from ._errors import InvalidSoftLoginError
from ._models import _GUID

__all__ = ["CANNOT_DECRYPT", "SoftLogin", "check_key", "decode_eclub"]

CANNOT_DECRYPT: Final = "cannot decrypt: wrong key or damaged token"
# How far in the future a link's dateTime may lie (clock skew between Voyado and the site).
FUTURE_SKEW: Final = 300.0
_KEY: Final = re.compile(r"[A-Za-z0-9]{32}")
_TOKEN: Final = re.compile(r"[A-Za-z0-9_+/-]+={0,2}")
_DATETIME: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_UTC: Final = timezone.utc


def _mask(value: object) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen
class SoftLogin:
    """What an ``eclub`` token says: the contact, the email it was sent to (``None`` when
    empty), when the link was made (aware, ``None`` when the token does not say), the
    Elevate ``discovery_key`` and the contact's identification ``key`` (Voyado's ``id``),
    when present. The email never shows in the repr."""

    contact_id: str
    email: str | None = attrs.field(default=None, repr=_mask)
    created: datetime | None = None
    discovery_key: str | None = None
    key: str | None = None


_crypto_names: tuple[Any, Any, Any] | None = None
_ciphers: dict[str, Any] = {}


def _crypto() -> tuple[Any, Any, Any]:
    """cryptography's ``Cipher``, ``AES`` and ``CBC``, imported on first use."""
    global _crypto_names
    if _crypto_names is None:
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        except ImportError:
            raise ImportError(
                "decoding eclub soft-login tokens needs the cryptography package: "
                "pip install 'voyado-tracking[eclub]'"
            ) from None
        _crypto_names = (Cipher, algorithms.AES, modes.CBC)
    return _crypto_names


def check_key(key: object) -> str:
    """The shared key as given, if it is 32 of ``[A-Za-z0-9]``; never echoed."""
    if type(key) is not str or not _KEY.fullmatch(key):
        raise InvalidSoftLoginError(
            "the eclub key must be 32 characters of A-Z, a-z and 0-9 (as Voyado issues it)"
        )
    return key


def _cipher(key: str) -> Any:
    # One AES key object per shared key: a site has one or two, and building it is half the
    # cost of a decode.
    cipher = _ciphers.get(key)
    if cipher is None:
        _, algorithm, _ = _crypto()
        if len(_ciphers) > 16:
            _ciphers.clear()
        cipher = _ciphers[key] = algorithm(key.encode("ascii"))
    return cipher


def _unbase64(token: str) -> bytes:
    if not _TOKEN.fullmatch(token):
        raise InvalidSoftLoginError("the eclub token is not URL-safe base64")
    data = token.rstrip("=").encode("ascii").translate(_TO_STANDARD)
    if len(data) % 4 == 1:
        raise InvalidSoftLoginError("the eclub token is not URL-safe base64")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSoftLoginError("the eclub token is not URL-safe base64") from None


def _decrypt(raw: bytes, key: str) -> bytes:
    cipher, _, cbc = _crypto()
    decryptor = cipher(_cipher(key), cbc(raw[:16])).decryptor()
    plain: bytes = decryptor.update(raw[16:]) + decryptor.finalize()
    pad = plain[-1]
    # Bad padding reads exactly like bad JSON or a missing contact id: one message.
    if not 1 <= pad <= 16 or plain[-pad:] != bytes((pad,)) * pad:
        raise InvalidSoftLoginError(CANNOT_DECRYPT)
    return plain[:-pad]


def _text(value: object) -> str | None:
    return value if type(value) is str and value else None


def parse_created(value: object) -> datetime | None:
    """A link's ``dateTime`` as an aware datetime (no offset: UTC), or None if unreadable."""
    if type(value) is not str or not (match := _DATETIME.fullmatch(value.strip())):
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second or 0), int((fraction or "0")[:6].ljust(6, "0")), _UTC)
    except ValueError:
        return None
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        if offset >= timedelta(hours=24):
            return None
        moment = moment.replace(tzinfo=timezone(sign * offset))
    return moment


def decode_eclub(token: str, key: str, *, max_age: float | None = None) -> SoftLogin:
    """Decrypt an ``eclub`` token with the tenant's 32-character shared key.

    Raises :class:`InvalidSoftLoginError` for bad base64, a length that is not a 16-byte IV
    and whole AES blocks, a malformed key, a token that does not decrypt to a soft login
    (one message for all of these: "cannot decrypt: wrong key or damaged token"), and with
    *max_age* (seconds) a link without a date, older than *max_age*, or dated more than 300 s
    ahead. Messages never hold the key or anything decrypted.
    """
    if type(token) is not str:
        raise InvalidSoftLoginError("the eclub token must be a string")
    check_key(key)
    if max_age is not None and not (isinstance(max_age, (int, float)) and max_age > 0):
        raise ValueError(f"max_age must be a number of seconds > 0, got {max_age!r}")
    raw = _unbase64(token)
    if len(raw) < 32 or len(raw) % 16:
        raise InvalidSoftLoginError(
            f"the eclub token has the wrong length ({len(raw)} bytes, not a 16-byte IV and "
            "whole 16-byte blocks)"
        )
    plain = _decrypt(raw, key)
    try:
        data = orjson.loads(plain)  # rejects bad UTF-8 as well as bad JSON
    except orjson.JSONDecodeError:
        raise InvalidSoftLoginError(CANNOT_DECRYPT) from None
    contact_id = None
    if type(data) is dict:
        for name, value in data.items():
            if name.lower() == "contactid":
                contact_id = value
                break
    if not (type(contact_id) is str and _GUID.fullmatch(contact_id)):
        raise InvalidSoftLoginError(CANNOT_DECRYPT)
    assert type(data) is dict
    created = parse_created(data.get("dateTime"))
    if max_age is not None:
        _check_age(created, max_age)
    key_value = data.get("id")
    return SoftLogin(
        contact_id,
        email=_text(data.get("email")),
        created=created,
        discovery_key=_text(data.get("discoveryKey")),
        key=str(key_value) if type(key_value) in (str, int) and key_value != "" else None,
    )


def _check_age(created: datetime | None, max_age: float) -> None:
    if created is None:
        raise InvalidSoftLoginError("the soft login has no dateTime, so max_age cannot be "
                                    "checked")
    age = time.time() - created.timestamp()
    if age > max_age:
        raise InvalidSoftLoginError(f"the soft-login link is older than max_age ({max_age:g} s)")
    if age < -FUTURE_SKEW:
        raise InvalidSoftLoginError("the soft-login link is dated more than 300 s in the future")
