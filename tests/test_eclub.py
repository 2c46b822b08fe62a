"""decode_eclub(): Voyado's soft-login tokens, and the failures that must not leak anything."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import orjson
import pytest

import voyado_tracking as vt
from voyado_tracking.testing import make_eclub

KEY = "DaqfT7Ys6tGqM3zbesEKpmacTJEqBCp2"
OTHER = "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"
CONTACT = "1c9b35d6-28d8-4520-8900-a89555f7f0c5"
EMAIL = "withnail@example.com"
CANNOT = "cannot decrypt: wrong key or damaged token"


def _encrypt(plain: bytes, key: str = KEY, iv: bytes | None = None) -> str:
    """A token from raw plaintext, with cryptography's own PKCS#7 (not make_eclub's)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16) if iv is None else iv
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key.encode()), modes.CBC(iv)).encryptor()
    return base64.urlsafe_b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode()


def _raw_encrypt(padded: bytes, key: str = KEY) -> str:
    """A token of *padded* exactly as given: no padding added (for bad-padding cases)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key.encode()), modes.CBC(iv)).encryptor()
    return base64.urlsafe_b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode()


def test_decodes_what_voyado_documents() -> None:
    token = make_eclub(CONTACT, KEY, email=EMAIL,
                       created=datetime(2018, 7, 11, 11, 19, 54, tzinfo=timezone.utc),
                       extra={"discoveryKey": "6iub35d6", "id": "60333"})
    assert vt.decode_eclub(token, KEY) == vt.SoftLogin(
        CONTACT, email=EMAIL, created=datetime(2018, 7, 11, 11, 19, 54, tzinfo=timezone.utc),
        discovery_key="6iub35d6", key="60333",
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl binary is not installed")
def test_decodes_a_token_built_by_openssl_enc() -> None:
    """OpenSSL encrypts independently of our code, so decoder and test encoder cannot share
    a mistake (padding, key bytes, IV placement, base64 alphabet)."""
    iv = bytes(range(16))
    plain = orjson.dumps({"contactid": CONTACT, "email": EMAIL,
                          "dateTime": "2018-07-11T11:19:54Z"})
    done = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", KEY.encode().hex(), "-iv", iv.hex()],
        input=plain, capture_output=True, check=True, timeout=30,
    )
    token = base64.urlsafe_b64encode(iv + done.stdout).decode().rstrip("=")
    login = vt.decode_eclub(token, KEY)
    assert (login.contact_id, login.email) == (CONTACT, EMAIL)
    assert login.created == datetime(2018, 7, 11, 11, 19, 54, tzinfo=timezone.utc)


def test_padding_is_optional() -> None:
    token = _encrypt(orjson.dumps({"contactId": CONTACT}))
    assert token.endswith("=")
    assert vt.decode_eclub(token.rstrip("="), KEY).contact_id == CONTACT


def test_the_contact_id_key_matches_in_any_case() -> None:
    token = _encrypt(orjson.dumps({"CONTACTID": CONTACT}))
    assert vt.decode_eclub(token, KEY).contact_id == CONTACT


def test_an_empty_email_is_none() -> None:
    assert vt.decode_eclub(make_eclub(CONTACT, KEY, email=""), KEY).email is None


def test_a_date_time_without_offset_is_utc() -> None:
    token = _encrypt(orjson.dumps({"contactId": CONTACT, "dateTime": "2018-07-11T11:19:54"}))
    created = vt.decode_eclub(token, KEY).created
    assert created == datetime(2018, 7, 11, 11, 19, 54, tzinfo=timezone.utc)


def test_a_date_time_with_an_offset_keeps_its_instant() -> None:
    token = _encrypt(orjson.dumps({"contactId": CONTACT,
                                   "dateTime": "2018-07-11T13:19:54.1234567+02:00"}))
    created = vt.decode_eclub(token, KEY).created
    assert created is not None
    assert created == datetime(2018, 7, 11, 11, 19, 54, 123456, tzinfo=timezone.utc)


def test_an_unreadable_date_time_is_none() -> None:
    token = _encrypt(orjson.dumps({"contactId": CONTACT, "dateTime": "yesterday"}))
    assert vt.decode_eclub(token, KEY).created is None


def test_the_email_never_shows_in_the_repr() -> None:
    login = vt.decode_eclub(make_eclub(CONTACT, KEY, email=EMAIL), KEY)
    assert EMAIL not in repr(login)


def test_a_wrong_key_cannot_decrypt() -> None:
    with pytest.raises(vt.InvalidSoftLoginError) as caught:
        vt.decode_eclub(make_eclub(CONTACT, OTHER), KEY)
    assert str(caught.value) == CANNOT


@pytest.mark.parametrize(
    "plain",
    [
        b"\x00" * 15 + b"\x11",  # padding byte > 16
        b"\x00" * 14 + b"\x01\x02",  # inconsistent padding
        b"\xff\xfe{}" + b"\x0c" * 12,  # not UTF-8
        b"not json" + b"\x08" * 8,  # not JSON
        b'["' + CONTACT.encode() + b'"]' + b"\x08" * 8,  # JSON, but not an object
    ],
    ids=["padding-too-long", "padding-inconsistent", "bad-utf8", "bad-json", "not-an-object"],
)
def test_every_decryption_failure_has_one_message(plain: bytes) -> None:
    """Distinct messages for padding and content would make a padding oracle."""
    assert len(plain) % 16 == 0
    with pytest.raises(vt.InvalidSoftLoginError) as caught:
        vt.decode_eclub(_raw_encrypt(plain), KEY)
    assert str(caught.value) == CANNOT


@pytest.mark.parametrize("contact", [None, "", "undefined", 42])
def test_no_valid_contact_id_cannot_decrypt(contact: object) -> None:
    token = _encrypt(orjson.dumps({"contactId": contact, "email": EMAIL}))
    with pytest.raises(vt.InvalidSoftLoginError) as caught:
        vt.decode_eclub(token, KEY)
    assert str(caught.value) == CANNOT


@pytest.mark.parametrize("token", ["not base64!", "A", "ab$c", "", "===="])
def test_bad_base64_is_an_invalid_soft_login(token: str) -> None:
    with pytest.raises(vt.InvalidSoftLoginError, match="base64"):
        vt.decode_eclub(token, KEY)


@pytest.mark.parametrize("size", [16, 31, 33, 40])
def test_a_length_that_is_not_iv_plus_whole_blocks_is_an_invalid_soft_login(size: int) -> None:
    token = base64.urlsafe_b64encode(b"\x01" * size).decode()
    with pytest.raises(vt.InvalidSoftLoginError, match="length"):
        vt.decode_eclub(token, KEY)


@pytest.mark.parametrize("key", ["", "short", KEY[:-1] + "!", KEY + "x", "å" * 32])
def test_a_key_that_is_not_32_alphanumerics_is_refused_without_echo(key: str) -> None:
    with pytest.raises(vt.InvalidSoftLoginError, match="32 characters") as caught:
        vt.decode_eclub(make_eclub(CONTACT, KEY), key)
    assert key not in str(caught.value) or not key


def test_the_error_is_a_voyado_error_and_a_value_error() -> None:
    assert issubclass(vt.InvalidSoftLoginError, vt.VoyadoError)
    assert issubclass(vt.InvalidSoftLoginError, ValueError)


def test_no_message_holds_the_key_or_decrypted_text() -> None:
    tokens = [make_eclub(CONTACT, OTHER, email=EMAIL),
              _encrypt(orjson.dumps({"contactId": "nope", "email": EMAIL})),
              make_eclub(CONTACT, KEY, email=EMAIL,
                         created=datetime.now(timezone.utc) - timedelta(days=2))]
    for token in tokens:
        with pytest.raises(vt.InvalidSoftLoginError) as caught:
            vt.decode_eclub(token, KEY, max_age=3600)
        text = repr(caught.value) + str(caught.value)
        for secret in (KEY, OTHER, EMAIL, CONTACT, "nope"):
            assert secret not in text


def test_max_age_refuses_an_old_link() -> None:
    token = make_eclub(CONTACT, KEY, created=datetime.now(timezone.utc) - timedelta(hours=2))
    with pytest.raises(vt.InvalidSoftLoginError, match="older than max_age"):
        vt.decode_eclub(token, KEY, max_age=3600)
    assert vt.decode_eclub(token, KEY, max_age=3 * 3600).contact_id == CONTACT


def test_max_age_refuses_a_link_without_a_date() -> None:
    token = _encrypt(orjson.dumps({"contactId": CONTACT}))
    with pytest.raises(vt.InvalidSoftLoginError, match="no dateTime"):
        vt.decode_eclub(token, KEY, max_age=3600)


def test_max_age_refuses_a_link_dated_more_than_300_s_ahead() -> None:
    soon = datetime.now(timezone.utc) + timedelta(seconds=200)
    late = datetime.now(timezone.utc) + timedelta(seconds=400)
    assert vt.decode_eclub(make_eclub(CONTACT, KEY, created=soon), KEY, max_age=60)
    with pytest.raises(vt.InvalidSoftLoginError, match="future"):
        vt.decode_eclub(make_eclub(CONTACT, KEY, created=late), KEY, max_age=60)


def test_make_eclub_tokens_are_url_safe() -> None:
    for _ in range(50):
        token = make_eclub(CONTACT, KEY, email="ä+ö/å@example.com")
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
