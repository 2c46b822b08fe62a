"""aiohttp: ``setup(app, base_url=..., api_key=...)`` adds a client, a buffer and identification."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .._buffer import TrackingBuffer
from .._client import TrackingClient
from .._identity import identify, server_cookie_header
from . import split_options

BUFFER_KEY = web.AppKey("voyado_buffer", TrackingBuffer)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, *, base_url: str, api_key: str, **options: Any) -> None:
    """Own a TrackingClient and TrackingBuffer for *app*'s life; set ``request["voyado"]``."""
    client_options, buffer_options = split_options(options)

    async def voyado_ctx(app: web.Application) -> AsyncIterator[None]:
        client = TrackingClient(base_url, api_key, **client_options)
        buffer = TrackingBuffer(client, **buffer_options)
        app[BUFFER_KEY] = buffer
        try:
            yield
        finally:
            await buffer.aclose()
            await client.aclose()

    @web.middleware
    async def voyado_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        identity = identify(request.query, request.headers.get("Cookie", ""))
        request["voyado"] = identity
        response = await handler(request)
        if identity is not None and identity.needs_server_cookie:
            secure = request.secure
            response.headers.add(
                "Set-Cookie", server_cookie_header(identity.contact_id, secure=secure)
            )
        return response

    app.cleanup_ctx.append(voyado_ctx)
    app.middlewares.append(voyado_middleware)
