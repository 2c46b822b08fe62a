"""The exception tree: what each error carries, and that it survives pickling."""

from __future__ import annotations

import pickle

import pytest

import voyado_tracking as vt
from voyado_tracking._errors import MAX_BODY_CHARS, api_error, shorten


@pytest.mark.parametrize(
    ("status", "kind", "retriable"),
    [
        (400, vt.ApiError, False),
        (401, vt.AuthenticationError, False),
        (403, vt.AuthenticationError, False),
        (404, vt.ApiError, False),
        (408, vt.ApiError, True),
        (413, vt.ApiError, False),
        (422, vt.ApiError, False),
        (429, vt.RateLimitError, True),
        (500, vt.ApiError, True),
        (501, vt.ApiError, False),
        (503, vt.ApiError, True),
        (599, vt.ApiError, True),
    ],
)
def test_status_maps_to_error_class_and_retriability(
    status: int, kind: type[vt.ApiError], retriable: bool
) -> None:
    error = api_error(status, "", "/p", None)
    assert type(error) is kind
    assert (error.status, error.retriable) == (status, retriable)


def test_api_error_message_names_status_and_endpoint() -> None:
    error = api_error(422, '{"error": "bad"}', "/api/v2/tracking/carts", None)
    assert str(error) == 'HTTP 422 from /api/v2/tracking/carts: {"error": "bad"}'


def test_api_error_body_is_truncated() -> None:
    error = vt.ApiError(400, "é" * 10_000)
    assert len(error.body) == MAX_BODY_CHARS + 1
    assert error.body.endswith("…")


def test_rate_limit_error_carries_retry_after() -> None:
    assert vt.RateLimitError(retry_after=2.5).retry_after == 2.5
    assert vt.RateLimitError().status == 429


def test_transport_error_is_retriable_and_not_an_api_error() -> None:
    error = vt.TransportError("timed out")
    assert error.retriable
    assert not isinstance(error, vt.ApiError)


@pytest.mark.parametrize(
    "error",
    [
        api_error(400, "x" * 5000, "/p", None),
        api_error(401, "", "/p", None),
        api_error(429, "slow down", "/p", 3.0),
        vt.TransportError("refused"),
        vt.InvalidEventError("time", "is bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling(error: vt.VoyadoError) -> None:
    """Errors cross process boundaries (worker pools, task queues) intact."""
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)


def test_shorten_truncates_long_values() -> None:
    assert shorten("abc") == "'abc'"
    assert shorten("x" * 1000).endswith("(1002 chars)")
    assert len(shorten("x" * 1000)) < 90


def test_shorten_survives_ints_too_large_to_print() -> None:
    assert "too large" in shorten(10**5000)
