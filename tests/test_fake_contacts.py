"""FakeVoyado's contacts and lookup endpoint, and ``fake-server --contacts FILE``."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import fake_server_process
from test_cli import run_cli

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault

LOOKUP = "/api/v3/contacts/id"
CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
HEADERS = {"apikey": "test-api-key", "User-Agent": "Test/1.0"}


async def _get(fake: FakeVoyado, query: dict[str, str],
               headers: dict[str, str] = HEADERS) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(
        fake.url + LOOKUP, params=query, headers=headers
    ) as response:
        return response.status, orjson.loads(await response.read())


def test_add_contact_makes_a_new_guid_when_none_is_given() -> None:
    fake = FakeVoyado()
    first, second = fake.add_contact(email="a@x.se"), fake.add_contact(email="b@x.se")
    assert first != second
    assert vt.Identity(first, "site").contact_id == first  # a valid contact id


def test_add_contact_keeps_a_given_id() -> None:
    assert FakeVoyado().add_contact(CONTACT, email="a@x.se") == CONTACT


async def test_the_lookup_answers_the_id_as_a_json_string(fake: FakeVoyado) -> None:
    fake.add_contact(CONTACT, email="Anna@Example.com")
    assert await _get(fake, {"email": "anna@example.com"}) == (200, CONTACT)


async def test_an_email_without_at_is_400_invalid_email_address(fake: FakeVoyado) -> None:
    status, body = await _get(fake, {"email": "anna.example.com"})
    assert status == 400
    assert isinstance(body, dict)
    assert body["errorCode"] == "InvalidEmailAddress"


async def test_no_match_is_404_contact_not_found(fake: FakeVoyado) -> None:
    status, body = await _get(fake, {"email": "nobody@example.com"})
    assert (status, body["errorCode"]) == (404, "ContactNotFound")  # type: ignore[index]


async def test_two_contacts_with_one_email_are_409_multiple_matches(fake: FakeVoyado) -> None:
    fake.add_contact(email="a@x.se")
    fake.add_contact(email="A@x.se")
    status, body = await _get(fake, {"email": "a@x.se"})
    assert (status, body["errorCode"]) == (409, "MultipleMatches")  # type: ignore[index]


@pytest.mark.parametrize("query", [{}, {"email": "a@x.se", "customKey": "k"}, {"email": ""}])
async def test_a_query_without_exactly_one_key_is_400(fake: FakeVoyado,
                                                      query: dict[str, str]) -> None:
    status, _ = await _get(fake, query)
    assert status == 400


async def test_a_lookup_with_a_wrong_key_is_401(fake: FakeVoyado) -> None:
    status, _ = await _get(fake, {"email": "a@x.se"}, {**HEADERS, "apikey": "wrong"})
    assert status == 401


async def test_lookups_counts_every_lookup_answered(fake: FakeVoyado) -> None:
    fake.add_contact(email="a@x.se")
    for query in ({"email": "a@x.se"}, {"email": "b@x.se"}, {"email": "bad"}):
        await _get(fake, query)
    assert fake.lookups == 3
    assert fake.state()["lookups"] == 3


async def test_lookups_share_the_rate_limit_window_with_tracking() -> None:
    async with FakeVoyado(rate_limit=2) as fake, vt.TrackingClient(fake.url, fake.api_key,
                                 max_requests_per_second=None) as client:
        await client.register_product_view(vt.ProductView("SKU-1", CONTACT))
        await _get(fake, {"email": "a@x.se"})
        status, _ = await _get(fake, {"email": "a@x.se"})
    assert status == 429
    assert fake.lookups == 1


async def test_scripted_faults_apply_to_lookups(fake: FakeVoyado) -> None:
    fake.script(Fault(status=503))
    status, _ = await _get(fake, {"email": "a@x.se"})
    assert status == 503
    assert fake.lookups == 0


async def test_reset_forgets_contacts_and_lookups(fake: FakeVoyado) -> None:
    fake.add_contact(email="a@x.se")
    await _get(fake, {"email": "a@x.se"})
    fake.reset()
    assert (fake.contacts, fake.lookups) == ([], 0)


async def test_fake_server_serves_the_contacts_of_a_file(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.jsonl"
    contacts.write_text(
        orjson.dumps({"contactId": CONTACT, "email": "anna@example.com"}).decode() + "\n\n"
        + orjson.dumps({"mobilePhone": "+46701234567", "contactType": "Contact"}).decode()
        + "\n"
    )
    async with fake_server_process("--contacts", str(contacts)) as server:
        async with vt.TrackingClient(server.base_url, server.api_key) as client:
            assert await client.find_contact_id(email="Anna@Example.com") == CONTACT
            assert await client.find_contact_id(mobile_phone="+46701234567") is not None
        err = await server.stop()
    assert server.process.returncode == 0
    assert b"2 contacts" in err


@pytest.mark.parametrize(
    ("line", "problem"),
    [("not json", "not valid JSON"), ('{"nickname": "x"}', "unknown field"),
     ('{"contactId": "nope"}', "not a GUID"), ('{"email": 3}', "non-empty string")],
)
async def test_a_bad_contacts_file_is_a_usage_error_naming_the_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    contacts = tmp_path / "contacts.jsonl"
    contacts.write_text('{"email": "a@x.se"}\n' + line + "\n")
    result = await run_cli("fake-server", "--contacts", str(contacts))
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert problem in result.stderr


async def test_a_missing_contacts_file_is_a_usage_error(tmp_path: Path) -> None:
    result = await run_cli("fake-server", "--contacts", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2
    assert "--contacts" in result.stderr
