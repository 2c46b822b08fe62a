"""contrib.aiohttp and contrib.starlette against the loopback FakeVoyado."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import eventually, fast_settings

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

CONTACT = "7b5c1a3e-2f4d-4e6a-9b8c-0d1e2f3a4b5c"


def test_importing_a_contrib_module_without_its_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "starlette" or m.startswith("starlette.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)  # what an absent package looks like
    monkeypatch.delitem(sys.modules, "voyado_tracking.contrib.starlette", raising=False)
    with pytest.raises(ImportError, match=r"voyado-tracking\[starlette\]"):
        importlib.import_module("voyado_tracking.contrib.starlette")


async def test_aiohttp_setup_identifies_the_visitor_and_delivers_events(fake: FakeVoyado) -> None:
    from voyado_tracking.contrib.aiohttp import BUFFER_KEY, setup

    async def handler(request: web.Request) -> web.Response:
        identity = request["voyado"]
        assert identity is not None
        request.app[BUFFER_KEY].enqueue(vt.ProductView("SKU-1", identity.contact_id))
        return web.Response(text=identity.source)

    app = web.Application()
    app.router.add_get("/", handler)
    setup(app, base_url=fake.url, api_key=fake.api_key, max_requests_per_second=None,
          settings=fast_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/", headers={"Cookie": f"_vaI={CONTACT}"}
        ) as response:
            assert await response.text() == "cookie"
            assert "_vaI_server=" + CONTACT in response.headers.getone("Set-Cookie")
        await eventually(lambda: len(fake.product_views) == 1)
    finally:
        await runner.cleanup()
    assert fake.product_views[0].contact_id == CONTACT


async def test_starlette_middleware_sets_request_state_and_lifespan_owns_the_buffer(
    fake: FakeVoyado,
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from voyado_tracking.contrib.starlette import VoyadoMiddleware, voyado_lifespan

    async def home(request: Request) -> PlainTextResponse:
        identity = request.state.voyado
        request.app.state.voyado_buffer.enqueue(vt.ProductView("SKU-2", identity.contact_id))
        return PlainTextResponse(identity.source)

    app = Starlette(
        routes=[Route("/", home)],
        lifespan=voyado_lifespan(fake.url, fake.api_key, max_requests_per_second=None,
                                 settings=fast_settings()),
    )
    app.add_middleware(VoyadoMiddleware)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/",
             "query_string": b"", "scheme": "http", "root_path": "",
             "headers": [(b"cookie", f"_vaI={CONTACT}".encode())], "app": app}
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
        await eventually(lambda: len(fake.product_views) == 1)
    headers = dict(sent[0]["headers"])
    assert headers[b"set-cookie"].decode().startswith(f"_vaI_server={CONTACT}")
    assert sent[1]["body"] == b"cookie"
