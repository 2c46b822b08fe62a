"""make_eclub: soft-login tokens as Voyado's email links carry them, for tests.

Written apart from the decoder (its own padding and base64), so the two cannot share a
mistake; the test suite also checks the decoder against tokens made by OpenSSL.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from uuid import UUID

import orjson

__all__ = ["make_eclub"]


def make_eclub(
    contact_id: str | UUID,
    key: str,
    *,
    email: str = "",
    created: datetime | None = None,
    extra: Mapping[str, object] | None = None,
    iv: bytes | None = None,
) -> str:
    """An ``eclub`` token for *contact_id*, encrypted with the 32-character shared *key*.

    *created* (default: now) becomes ``dateTime``, in UTC with ``Z``; *extra* adds or
    replaces JSON fields (``discoveryKey``, ``id``, or a damaged ``contactId``); *iv* fixes
    the 16-byte IV (default: random), for repeatable tokens.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(key) != 32 or not key.isascii() or not key.isalnum():
        raise ValueError("key must be 32 characters of A-Z, a-z and 0-9")
    moment = datetime.now(timezone.utc) if created is None else created
    payload: dict[str, object] = {
        "contactId": str(contact_id),
        "email": email,
        "dateTime": moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    payload.update(extra or {})
    plain = orjson.dumps(payload)
    fill = 16 - len(plain) % 16
    plain += bytes([fill]) * fill
    iv = os.urandom(16) if iv is None else iv
    if len(iv) != 16:
        raise ValueError("iv must be 16 bytes")
    encryptor = Cipher(algorithms.AES(key.encode("ascii")), modes.CBC(iv)).encryptor()
    sealed = iv + encryptor.update(plain) + encryptor.finalize()
    return base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")
