"""``async with`` for everything the library closes with ``await aclose()``."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["AsyncClosing"]

_T = TypeVar("_T", bound="AsyncClosing")


class AsyncClosing:
    """A base class: ``async with obj:`` returns *obj* and awaits ``obj.aclose()`` on exit."""

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _T) -> _T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
