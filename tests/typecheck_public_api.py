"""Uses the public API the way an application would; ``mypy --strict`` must accept it.

Not a test module (pytest does not collect it): tests/test_public_api.py type-checks it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import aiohttp

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault, make_eclub

CONTACT = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"


def build_events() -> tuple[vt.Cart, vt.ProductView]:
    cart = vt.Cart(
        cart_reference="cart-1",
        contact_id=CONTACT,
        items=[vt.CartItem(sku="sku-1", quantity=2)],
        time=datetime.now(timezone.utc),
        language="sv-SE",
        url="https://shop.example/cart",
    )
    view = vt.ProductView(
        item_id="sku-1",
        contact_id=CONTACT,
        time="2021-09-22T11:00:00+02:00",
        category="shoes",
        new_session=True,
        utm=(vt.Utm("utm_source", "newsletter"),),
    )
    emptied: vt.Cart = vt.Cart("cart-1", CONTACT, items=())
    assert emptied.items == ()
    bought: vt.Cart = vt.Cart.checked_out("cart-1", CONTACT, time="2021-09-22T11:00:00Z",
                                          skew=2.5)
    assert bought.checkout
    assert not emptied.checkout
    return cart, view


async def send_awaited(session: aiohttp.ClientSession) -> int | None:
    cart, view = build_events()
    async with FakeVoyado() as fake:
        fake.script(Fault(status=429, retry_after=0.01))
        client = vt.TrackingClient(
            fake.url,
            fake.api_key,
            user_agent="MyShop/1.0",
            session=session,
            timeout=5.0,
            retry=vt.RetryPolicy(max_attempts=5, initial_backoff=0.1, max_backoff=2.0),
            max_requests_per_second=None,
            max_batch_size=100,
        )
        async with client:
            try:
                await client.register_cart(cart)
                await client.register_carts([cart, cart])
                await client.register_product_view(view)
                await client.register_product_views(v for v in [view])
            except vt.RateLimitError as error:
                delay: float | None = error.retry_after
                return None if delay is None else int(delay)
            except vt.AuthenticationError as error:
                return error.status
            except vt.ApiError as error:
                retriable: bool = error.retriable
                body: str = error.body
                return error.status if retriable or body else None
            except (vt.TransportError, vt.InvalidEventError):
                return None
            except vt.VoyadoError:
                raise
        return len(fake.product_views)


async def fire_and_forget(client: vt.TrackingClient) -> int:
    settings = vt.FlushSettings(max_batch_size=200, flush_interval=0.5, overflow="drop_newest")
    dropped: list[vt.Cart | vt.ProductView] = []

    def on_drop(event: vt.Cart | vt.ProductView, reason: str) -> None:
        dropped.append(event)

    async with vt.TrackingBuffer(client, settings, on_drop=on_drop) as buffer:
        vt.instrument(buffer)  # OpenTelemetry, on the global meter provider
        for event in build_events():
            buffer.enqueue(event)
        await buffer.flush(timeout=5.0)
        stats: vt.BufferStats = buffer.stats
    as_json: dict[str, object] = stats.as_dict()
    assert as_json["sent"] == stats.sent
    return stats.sent + len(dropped)


ECLUB_KEY = "DaqfT7Ys6tGqM3zbesEKpmacTJEqBCp2"


def identify_request(query: dict[str, str], cookies: dict[str, str]) -> list[str]:
    """What a middleware does with a request: the contact, and the cookie to set."""
    identity: vt.Identity | None = vt.identify(
        query, cookies, contact_id=None, eclub_key=ECLUB_KEY, eclub_max_age=86_400.0
    )
    if identity is None:
        return []
    source: str = identity.source
    headers = [source]
    if identity.needs_server_cookie:
        headers.append(vt.server_cookie_header(identity.contact_id, secure=True))
    return headers


def soft_login(token: str) -> str | None:
    try:
        login: vt.SoftLogin = vt.decode_eclub(token, ECLUB_KEY, max_age=3600.0)
    except vt.InvalidSoftLoginError:
        return None
    email: str | None = login.email
    return login.contact_id if email is None else email


async def look_up(client: vt.TrackingClient, fake: FakeVoyado) -> str | None:
    contact: str = fake.add_contact(email="anna@example.com")
    cache = vt.ContactCache(client, ttl=60.0, negative_ttl=10.0, max_entries=100,
                            timeout=1.0)
    try:
        found: str | None = await client.find_contact_id(email="anna@example.com")
        cached: str | None = await cache.email("Anna@Example.com")
    except vt.MultipleMatchesError:
        return None
    hits: int = cache.stats.hits
    assert found == cached == contact
    assert hits == 0
    assert soft_login(make_eclub(contact, ECLUB_KEY)) == contact
    return found


VERSION: str = vt.__version__
