"""client.find_contact_id(): Voyado's contact lookup, on the tracking calls' transport."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest
from aioresponses import aioresponses
from test_client_requests import _CompatResponse

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault

EMAIL = "anna.svensson@example.com"
LOOKUP = "/api/v3/contacts/id"


@pytest.fixture
async def lookup_client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(fake.url, fake.api_key, user_agent="MyShop/1.0",
                                 max_requests_per_second=None,
                                 retry=vt.RetryPolicy(initial_backoff=0.01)) as c:
        yield c


async def test_finds_the_contact_of_an_email(fake: FakeVoyado,
                                             lookup_client: vt.TrackingClient) -> None:
    contact = fake.add_contact(email=EMAIL)
    assert await lookup_client.find_contact_id(email=EMAIL) == contact


async def test_finds_by_phone_custom_key_and_any(fake: FakeVoyado,
                                                 lookup_client: vt.TrackingClient) -> None:
    contact = fake.add_contact(mobile_phone="+46701234567", custom_key="K-1")
    assert await lookup_client.find_contact_id(mobile_phone="+46701234567") == contact
    assert await lookup_client.find_contact_id(custom_key="K-1") == contact
    assert await lookup_client.find_contact_id(any="K-1") == contact


async def test_contact_type_narrows_the_lookup(fake: FakeVoyado,
                                               lookup_client: vt.TrackingClient) -> None:
    fake.add_contact(email=EMAIL, contact_type="Member")
    contact = fake.add_contact(email=EMAIL, contact_type="Contact")
    assert await lookup_client.find_contact_id(email=EMAIL, contact_type="Contact") == contact


async def test_an_unknown_contact_is_none(lookup_client: vt.TrackingClient) -> None:
    assert await lookup_client.find_contact_id(email=EMAIL) is None


async def test_two_contacts_with_one_email_are_multiple_matches(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    fake.add_contact(email=EMAIL)
    fake.add_contact(email=EMAIL)
    with pytest.raises(vt.MultipleMatchesError) as caught:
        await lookup_client.find_contact_id(email=EMAIL)
    assert isinstance(caught.value, vt.ApiError)
    assert caught.value.status == 409
    assert not caught.value.retriable


async def test_an_invalid_email_is_an_api_error_that_never_shows_the_value(
    lookup_client: vt.TrackingClient,
) -> None:
    with pytest.raises(vt.ApiError) as caught:
        await lookup_client.find_contact_id(email="Anna.Svensson-at-example.com")
    error = caught.value
    assert error.status == 400
    assert "InvalidEmailAddress" in error.body
    assert "***" in error.body  # the fake echoes the value it refused
    for text in (error.body, str(error), repr(error), error.endpoint):
        assert "svensson" not in text.lower()
    assert error.endpoint.endswith(LOOKUP)


@pytest.mark.parametrize("keys", [{}, {"email": EMAIL, "custom_key": "K-1"}])
async def test_exactly_one_key_is_required(lookup_client: vt.TrackingClient,
                                           keys: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly one") as caught:
        await lookup_client.find_contact_id(**keys)
    assert EMAIL not in str(caught.value)


async def test_an_answer_that_is_not_a_contact_id_is_undecodable(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=200, body='{"id": "x"}'))
    with pytest.raises(vt.ApiError, match="undecodable lookup answer") as caught:
        await lookup_client.find_contact_id(email=EMAIL)
    assert not caught.value.retriable
    assert len(fake.requests) == 1  # not retried


async def test_a_5xx_is_retried(fake: FakeVoyado, lookup_client: vt.TrackingClient) -> None:
    contact = fake.add_contact(email=EMAIL)
    fake.script(503, Fault(drop=True))
    assert await lookup_client.find_contact_id(email=EMAIL) == contact
    assert [r.status for r in fake.requests] == [503, 0, 200]


async def test_lookups_send_the_tracking_headers(fake: FakeVoyado,
                                                 lookup_client: vt.TrackingClient) -> None:
    await lookup_client.find_contact_id(email=EMAIL)
    (request,) = fake.requests
    assert request.key_ok
    assert request.user_agent == "MyShop/1.0"
    assert request.content_type == "application/json"


async def test_the_fake_logs_lookup_paths_without_the_query(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    await lookup_client.find_contact_id(email=EMAIL)
    assert [r.path for r in fake.requests] == [LOOKUP]
    assert EMAIL not in str(fake.state())


async def test_a_429_on_a_lookup_pauses_the_tracking_calls(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    """One 429 gate: the lookup's 429 holds the client's tracking calls too."""
    fake.script(Fault(status=429, retry_after=30))
    with pytest.raises(vt.RateLimitError):
        await lookup_client.find_contact_id(email=EMAIL)
    with pytest.raises(vt.RateLimitError, match="paused"):
        await lookup_client.register_cart(vt.Cart("c-1", "3fa85f64-5717-4562-b3fc-2c963f66afa6"))
    assert len(fake.requests) == 1


async def test_a_timeout_names_the_path_but_not_the_value(fake: FakeVoyado) -> None:
    fake.latency = 1.0
    async with vt.TrackingClient(fake.url, fake.api_key, timeout=0.1,
                                 retry=vt.RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(vt.TransportError) as caught:
            await client.find_contact_id(email=EMAIL)
    assert LOOKUP in str(caught.value)
    assert "anna" not in str(caught.value).lower()


async def test_no_log_line_holds_the_value(fake: FakeVoyado, lookup_client: vt.TrackingClient,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(503, 400)
    with pytest.raises(vt.ApiError):
        await lookup_client.find_contact_id(email=EMAIL)
    assert caplog.records
    assert all("anna" not in record.getMessage().lower() for record in caplog.records)


async def test_the_request_carries_the_value_in_the_query() -> None:
    """Request building only (no server): the one place the value may go."""
    url = "https://tenant.voyado.com/api/v3/contacts/id"
    with patch("aioresponses.core.ClientResponse", _CompatResponse), aioresponses() as mocked:
        mocked.get(re.compile(re.escape(url) + r"\?.*"), status=200,
                   body='"3fa85f64-5717-4562-b3fc-2c963f66afa6"')
        async with vt.TrackingClient("https://tenant.voyado.com", "key") as client:
            await client.find_contact_id(social_security_number="19121212-1212",
                                         contact_type="Member")
        ((method, called),) = mocked.requests
    assert method == "GET"
    assert dict(called.query) == {"socialSecurityNumber": "19121212-1212",
                                  "contactType": "Member"}
