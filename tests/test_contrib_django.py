"""contrib.django: VoyadoMiddleware and tracker() against a loopback FakeVoyado."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conftest import wait_for

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

django_conf = pytest.importorskip("django.conf")

CONTACT = "7b5c1a3e-2f4d-4e6a-9b8c-0d1e2f3a4b5c"


@pytest.fixture
def dj(threaded_fake: FakeVoyado) -> Iterator[object]:
    import django

    if not django_conf.settings.configured:
        django_conf.settings.configure(ALLOWED_HOSTS=["*"], DEBUG=False)
        django.setup()
    from voyado_tracking.contrib import django as contrib

    django_conf.settings.VOYADO_TRACKING = {
        "base_url": threaded_fake.url, "api_key": threaded_fake.api_key,
        "settings": {"flush_interval": 0.05},
        "client_options": {"max_requests_per_second": None},
    }
    contrib._tracker = contrib._ident = None
    try:
        yield contrib
    finally:
        if contrib._tracker is not None:
            contrib._tracker.close()
        contrib._tracker = contrib._ident = None


def view_of(request: object) -> object:
    from django.http import HttpResponse

    identity = request.voyado  # type: ignore[attr-defined]
    return HttpResponse("anonymous" if identity is None else identity.source)


def test_django_sync_middleware_reads_the_raw_cookie_header_and_sets_the_server_cookie(
    dj: object,
) -> None:
    from django.test import RequestFactory

    middleware = dj.VoyadoMiddleware(view_of)  # type: ignore[attr-defined]
    request = RequestFactory().get("/", HTTP_COOKIE=f"_vaI=junk; _vaI={CONTACT}")
    response = middleware(request)
    assert response.content == b"cookie"
    assert response.cookies["_vaI_server"].value == CONTACT


def test_django_async_middleware_sets_request_voyado(dj: object) -> None:
    from django.test import RequestFactory

    async def async_view(request: object) -> object:
        return view_of(request)

    middleware = dj.VoyadoMiddleware(async_view)  # type: ignore[attr-defined]
    request = RequestFactory().get("/", HTTP_COOKIE=f"_vaI={CONTACT}")
    response = asyncio.run(middleware(request))
    assert response.content == b"cookie"


def test_django_tracker_is_one_per_process_and_delivers(
    dj: object, threaded_fake: FakeVoyado,
) -> None:
    tracker = dj.tracker()  # type: ignore[attr-defined]
    assert dj.tracker() is tracker  # type: ignore[attr-defined]
    tracker.enqueue(vt.ProductView("SKU-1", CONTACT))
    tracker.flush(timeout=10)
    wait_for(lambda: len(threaded_fake.product_views) == 1)
