"""Starlette and FastAPI: an ASGI ``VoyadoMiddleware`` and ``voyado_lifespan``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import require, split_options

require("starlette", "starlette")

from starlette.datastructures import QueryParams  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from .._buffer import TrackingBuffer  # noqa: E402
from .._client import TrackingClient  # noqa: E402
from .._identity import identify, server_cookie_header  # noqa: E402


class VoyadoMiddleware:
    """Set ``request.state.voyado`` (Identity or None) and the ``_vaI_server`` cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = b"; ".join(v for k, v in scope.get("headers", ()) if k == b"cookie")
        query = QueryParams(scope.get("query_string", b""))
        identity = identify(query, cookie.decode("latin-1"))
        scope.setdefault("state", {})["voyado"] = identity
        if identity is None or not identity.needs_server_cookie:
            await self.app(scope, receive, send)
            return
        header = server_cookie_header(
            identity.contact_id, secure=scope.get("scheme") == "https"
        ).encode("latin-1")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"set-cookie", header)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def voyado_lifespan(
    base_url: str, api_key: str, **options: Any
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan owning a client and buffer, the buffer at ``app.state.voyado_buffer``."""
    client_options, buffer_options = split_options(options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        client = TrackingClient(base_url, api_key, **client_options)
        buffer = TrackingBuffer(client, **buffer_options)
        app.state.voyado_buffer = buffer
        try:
            yield
        finally:
            await buffer.aclose()
            await client.aclose()

    return lifespan
