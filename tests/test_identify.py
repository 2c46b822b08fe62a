"""identify(): the sources of a contact id, their order, junk skipped, the server cookie."""

from __future__ import annotations

import pickle
import uuid
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

import voyado_tracking as vt
from voyado_tracking.testing import make_eclub

A = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
B = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
C = "1c9b35d6-28d8-4520-8900-a89555f7f0c5"
SHORT = "9cle0_ctRE25K6kMABznMg"
KEY = "DaqfT7Ys6tGqM3zbesEKpmacTJEqBCp2"


def test_nothing_to_go_on_is_none() -> None:
    assert vt.identify({}, {}) is None


def test_the_vai_cookie_identifies_a_returning_visitor() -> None:
    assert vt.identify({}, {"_vaI": A}) == vt.Identity(A, "cookie", needs_server_cookie=True)


def test_vtid_beats_the_cookie() -> None:
    assert vt.identify({"vtid": SHORT}, {"_vaI": A}) == vt.Identity(
        SHORT, "vtid", needs_server_cookie=True)


def test_eclub_beats_vtid() -> None:
    identity = vt.identify({"vtid": SHORT, "eclub": make_eclub(B, KEY)}, {}, eclub_key=KEY)
    assert identity == vt.Identity(B, "eclub")


def test_the_site_known_contact_beats_every_cookie_and_link() -> None:
    """On a shared browser the cookies may name the previous person."""
    query = {"vtid": SHORT, "eclub": make_eclub(B, KEY)}
    identity = vt.identify(query, {"_vaI": A}, contact_id=C, eclub_key=KEY)
    assert identity is not None
    assert (identity.contact_id, identity.source) == (C, "site")


def test_the_site_contact_may_be_a_uuid() -> None:
    identity = vt.identify({}, {}, contact_id=uuid.UUID(C))
    assert identity == vt.Identity(C, "site")


def test_the_server_cookie_is_the_last_source() -> None:
    assert vt.identify({}, {"_vaI_server": B}) == vt.Identity(B, "server_cookie")


def test_vai_beats_the_server_cookie() -> None:
    identity = vt.identify({}, {"_vaI": A, "_vaI_server": B})
    assert identity is not None
    assert (identity.contact_id, identity.source) == (A, "cookie")


@pytest.mark.parametrize(
    "junk", ["", "undefined", "null", "0", A[:-1], A + "x", " " + A, SHORT[1:]]
)
def test_junk_values_are_skipped_silently(junk: str) -> None:
    assert vt.identify({"vtid": junk}, {"_vaI": junk, "_vaI_server": junk},
                       contact_id=junk) is None


def test_junk_in_an_earlier_source_falls_through_to_a_valid_later_one() -> None:
    identity = vt.identify({"vtid": "undefined"}, {"_vaI": "null", "_vaI_server": B},
                           contact_id="")
    assert identity == vt.Identity(B, "server_cookie")


def test_a_guid_in_upper_case_is_valid() -> None:
    identity = vt.identify({"vtid": A.upper()}, {})
    assert identity is not None
    assert identity.contact_id == A.upper()


def test_every_value_of_a_multidict_name_is_tried_and_the_first_valid_wins() -> None:
    query = MultiDict([("vtid", "undefined"), ("vtid", SHORT), ("vtid", A)])
    assert vt.identify(query, {}) == vt.Identity(SHORT, "vtid")


class _GetList(dict[str, str]):
    """A werkzeug- or Django-style mapping: ``getlist`` gives every value."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


def test_a_getlist_mapping_has_every_value_tried() -> None:
    cookies = _GetList([("_vaI", "null"), ("_vaI", A)])
    identity = vt.identify({}, cookies)
    assert identity is not None
    assert identity.contact_id == A


def test_the_raw_cookie_header_is_read_like_parsed_cookies() -> None:
    header = f'shop=1; _vaI="{A}"; _ga=GA1.1; _vaI_server={B}'
    assert vt.identify({}, header) == vt.Identity(A, "cookie", needs_server_cookie=True)


def test_the_raw_cookie_header_matches_whole_names_only() -> None:
    assert vt.identify({}, f"x_vaI={A}; my_vaI_server={B}") is None


def test_every_value_of_a_cookie_in_the_raw_header_is_tried() -> None:
    identity = vt.identify({}, f"_vaI=undefined; _vaI={A}; _vaI_server={A}")
    assert identity == vt.Identity(A, "cookie")


def test_eclub_is_ignored_without_a_key() -> None:
    assert vt.identify({"eclub": make_eclub(B, KEY)}, {}) is None


@pytest.mark.parametrize("name", ["eClub", "ECLUB", "Eclub"])
def test_the_eclub_name_matches_in_any_case(name: str) -> None:
    identity = vt.identify({name: make_eclub(B, KEY)}, {}, eclub_key=KEY)
    assert identity == vt.Identity(B, "eclub")


def test_an_eclub_made_with_another_key_is_skipped_like_junk() -> None:
    other = "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"
    identity = vt.identify({"eclub": make_eclub(B, other), "vtid": SHORT}, {}, eclub_key=KEY)
    assert identity == vt.Identity(SHORT, "vtid")


def test_a_stale_eclub_is_skipped_with_a_max_age() -> None:
    old = datetime.now(timezone.utc) - timedelta(days=8)
    query = {"eclub": make_eclub(B, KEY, created=old)}
    assert vt.identify(query, {}, eclub_key=KEY) == vt.Identity(B, "eclub")
    assert vt.identify(query, {}, eclub_key=KEY, eclub_max_age=7 * 86_400) is None


def test_a_malformed_eclub_key_is_an_error_not_junk() -> None:
    """A wrong key is the site's configuration mistake: it must be loud."""
    with pytest.raises(vt.InvalidSoftLoginError, match="32 characters") as caught:
        vt.identify({"eclub": make_eclub(B, KEY)}, {}, eclub_key="short-key")
    assert "short-key" not in str(caught.value)


def test_needs_server_cookie_when_the_server_copy_is_missing() -> None:
    identity = vt.identify({}, {"_vaI": A})
    assert identity is not None
    assert identity.needs_server_cookie


def test_no_server_cookie_needed_when_it_holds_the_contact() -> None:
    identity = vt.identify({}, {"_vaI": A, "_vaI_server": A})
    assert identity is not None
    assert not identity.needs_server_cookie


def test_server_cookie_needed_when_it_names_someone_else() -> None:
    identity = vt.identify({}, {"_vaI": A, "_vaI_server": B})
    assert identity is not None
    assert identity.needs_server_cookie


def test_no_server_cookie_without_a_valid_vai_cookie() -> None:
    """Only Voyado's own cookie shows the visitor consented to its script."""
    for cookies in ({}, {"_vaI": "undefined"}):
        identity = vt.identify({"vtid": SHORT}, cookies)
        assert identity is not None
        assert not identity.needs_server_cookie


def test_server_cookie_header_is_a_year_long_lax_secure_cookie() -> None:
    assert vt.server_cookie_header(A) == (
        f"_vaI_server={A}; Max-Age=31536000; Path=/; SameSite=Lax; Secure"
    )


def test_server_cookie_header_without_secure_for_plain_http() -> None:
    assert not vt.server_cookie_header(uuid.UUID(A), secure=False).endswith("Secure")


def test_server_cookie_header_refuses_what_is_not_a_contact_id() -> None:
    with pytest.raises(ValueError, match="GUID"):
        vt.server_cookie_header("x; Domain=evil.example")


def test_identity_is_frozen() -> None:
    identity = vt.Identity(A, "cookie")
    with pytest.raises(AttributeError):
        identity.contact_id = B  # type: ignore[misc]


def test_identity_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="source"):
        vt.Identity(A, "guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="GUID"):
        vt.Identity("undefined", "cookie")


def test_identity_equals_only_identities() -> None:
    assert vt.Identity(A, "cookie") != (A, "cookie", False)
    assert vt.Identity(A, "cookie") == vt.Identity(A, "cookie", needs_server_cookie=False)


def test_identity_survives_pickling() -> None:
    identity = vt.Identity(A, "vtid", needs_server_cookie=True)
    assert pickle.loads(pickle.dumps(identity)) == identity


def test_identify_works_without_cryptography_installed() -> None:
    """Only eclub needs the extra: the cookie path never imports it."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "import voyado_tracking as vt\n"
        f"assert vt.identify({{'vtid': '{SHORT}'}}, {{}}, eclub_key='{KEY}').source == 'vtid'\n"
        "try:\n"
        f"    vt.decode_eclub('A' * 43, '{KEY}')\n"
        "except ImportError as e:\n"
        "    assert 'voyado-tracking[eclub]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


_NAMES = st.sampled_from(
    ["vtid", "eclub", "eClub", "EcLuB", "_vaI", "_vaI_server", "page", "color"]
)
_VALUES = st.sampled_from([A, B, SHORT, "", "undefined", "null", A.upper(), "x" * 22 + "!"])


@settings(max_examples=300, deadline=None)
@given(query=st.dictionaries(_NAMES, _VALUES, max_size=4),
       cookies=st.dictionaries(_NAMES, _VALUES, max_size=4),
       eclub=st.booleans())
def test_the_plain_dict_fast_path_decides_like_the_general_path(
    query: dict[str, str], cookies: dict[str, str], eclub: bool
) -> None:
    """Mappingproxy cookies are neither a dict nor a header: they take the general path."""
    key = KEY if eclub else None
    general = vt.identify(MappingProxyType(query), MappingProxyType(cookies), eclub_key=key)
    assert vt.identify(query, cookies, eclub_key=key) == general
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    assert vt.identify(query, header, eclub_key=key) == general
