"""Which stream entries a forwarder holds, and which ones a delivery settles. Pure.

A forwarder feeds events into a :class:`PendingStore`, which collapses cart updates: the event
the sender finally delivers may stand for several entries. The ledger answers "this event was
delivered (or dead-lettered): which entries may go?".

- A product view is its own entry.
- A cart delivered at instant ``T`` from entry ``E`` settles every held entry of that cart
  that Voyado no longer needs: older instants, and equal instants that arrived no later than
  ``E`` (a later one with the same instant would win the collapse, so it is still to send).
  Newer updates stay held: they are pending in the store and are delivered themselves.
"""

from __future__ import annotations

from .._models import Cart, ProductView, supersedes
from .._wire import Event
from ._stream import entry_key

__all__ = ["Ledger"]


class Ledger:
    """Entries held by one forwarder, keyed to the events read from them."""

    __slots__ = ("_carts", "_ids", "_views")

    def __init__(self) -> None:
        self._views: dict[int, tuple[ProductView, str]] = {}  # id(view) -> (view, entry id)
        self._carts: dict[str, list[tuple[str, Cart]]] = {}  # reference -> entries held
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._ids

    def ids(self) -> list[str]:
        return list(self._ids)

    def add(self, entry_id: str, event: Event) -> None:
        self._ids.add(entry_id)
        if type(event) is ProductView:
            self._views[id(event)] = (event, entry_id)
        else:
            assert isinstance(event, Cart)
            self._carts.setdefault(event.cart_reference, []).append((entry_id, event))

    def settle(self, events: list[Event]) -> list[str]:
        """The entries that the delivery (or dead letter) of *events* settles; forgets them."""
        settled: list[str] = []
        for event in events:
            if type(event) is ProductView:
                held = self._views.pop(id(event), None)
                if held is not None:
                    settled.append(held[1])
            else:
                assert isinstance(event, Cart)
                settled.extend(self._settle_cart(event))
        self._ids.difference_update(settled)
        return settled

    def _settle_cart(self, cart: Cart) -> list[str]:
        entries = self._carts.get(cart.cart_reference)
        if not entries:
            return []
        own = next((eid for eid, held in entries if held is cart), None)
        own_key = entry_key(own) if own is not None else (-1, -1)
        keep: list[tuple[str, Cart]] = []
        settled: list[str] = []
        for eid, held in entries:
            # Settled unless it would win the collapse against the delivered cart.
            later = held is not cart and entry_key(eid) > own_key
            if (not supersedes(held, cart)) if later else supersedes(cart, held):
                settled.append(eid)
            else:
                keep.append((eid, held))
        if keep:
            self._carts[cart.cart_reference] = keep
        else:
            del self._carts[cart.cart_reference]
        return settled

    def clear(self) -> list[str]:
        """Forget every entry (they are released to other forwarders); returns their ids."""
        ids = list(self._ids)
        self._views.clear()
        self._carts.clear()
        self._ids.clear()
        return ids
