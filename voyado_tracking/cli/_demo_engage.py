"""The demo's last question: which mails would Engage send 30 minutes after the traffic, and
does any of them go to a shopper about a cart they checked out?

The shop simulator checks out with ``Cart.checked_out``; the fake's Engage emulation
(``fake.engage``) says which carts and browse sessions mail, and why the other carts do not.
A checked-out cart that would mail fails the demo: it is the mistake that costs a shop its
customers' trust, and the one every 200 answer hides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from .. import Cart
from .._wire import Event
from ..testing import EngageMail, FakeVoyado

__all__ = ["AFTER", "DemoMails"]

AFTER: Final = timedelta(minutes=30)


class DemoMails:
    """The mails due :data:`AFTER` the last event of *events*, as the fake's Engage sees them."""

    def __init__(self, fake: FakeVoyado, events: Sequence[Event]) -> None:
        self.now: datetime | None = (max(e.time for e in events) + AFTER) if events else None
        self.mails: list[EngageMail] = fake.engage.mails(self.now) if self.now else []
        self.checked_out = sorted({e.cart_reference for e in events
                                   if type(e) is Cart and e.checkout})
        mailing = {m.cart_reference for m in self.mails if m.kind == "abandoned_cart"}
        self.wrong = [ref for ref in self.checked_out if ref in mailing]
        self.reasons: Counter[str] = Counter(
            _reason(fake.engage.explain(ref, self.now)) for ref in fake.carts
            if ref not in mailing
        ) if self.now else Counter()

    def check(self) -> tuple[bool, str]:
        total = len(self.checked_out)
        if not self.wrong:
            return True, f"no checked-out cart would mail: 0 of {total}"
        shown = ", ".join(self.wrong[:5]) + (", ..." if len(self.wrong) > 5 else "")
        return False, (f"no checked-out cart would mail: {len(self.wrong)} of {total} would "
                       f"({shown})")

    def report_lines(self) -> list[str]:
        kinds = Counter(m.kind for m in self.mails)
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.reasons.most_common())
        return [
            f"  {'Engage mails in 30 min':<25}{kinds['abandoned_cart']:>8}  abandoned carts, "
            f"{kinds['abandoned_browse']} abandoned browse sessions",
            f"{' ' * 37}(carts that do not mail: {reasons or 'none'})",
        ]


def _reason(explanation: str) -> str:
    """An explanation without its numbers, to count alike ones together."""
    if explanation.startswith("idle only"):
        return "idle too short"
    if explanation.startswith("mails at"):
        return "mails"
    return explanation
