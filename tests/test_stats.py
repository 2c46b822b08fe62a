"""Every stats class has as_dict(): its fields by name, JSON-ready."""

from __future__ import annotations

import json

import attrs
import pytest
from conftest import view

import voyado_tracking as vt
from voyado_tracking._contacts import ContactCacheStats
from voyado_tracking._stats import ForwarderStats, OutboxStats

STATS = [vt.BufferStats, ForwarderStats, OutboxStats, ContactCacheStats]


@pytest.mark.parametrize("cls", STATS)
def test_as_dict_holds_every_field_and_survives_json(cls: type) -> None:
    fields = attrs.fields(cls)
    values = {f.name: n for n, f in enumerate(fields)}
    stats = cls(**values)
    data = stats.as_dict()
    assert data == values
    assert json.loads(json.dumps(data)) == values


async def test_a_buffers_stats_as_dict_is_json_ready(client: vt.TrackingClient) -> None:
    """Delays (floats, None before the first delivery) included."""
    async with vt.TrackingBuffer(client) as buffer:
        buffer.enqueue(view("sku-1"))
        before = buffer.stats.as_dict()
        await buffer.flush(timeout=10)
        after = buffer.stats.as_dict()
    assert before["delivery_delay_p99"] is None
    assert json.loads(json.dumps(after)) == after
    assert after["sent"] == 1
    assert isinstance(after["delivery_delay_p99"], float)
