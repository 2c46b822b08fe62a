"""The public surface: ``__all__`` is a decision, reprs name the package, types are checked."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest

import voyado_tracking as vt
import voyado_tracking.testing as vt_testing
from voyado_tracking.testing import FakeVoyado

ROOT = Path(__file__).resolve().parent.parent
USAGE = Path(__file__).with_name("typecheck_public_api.py")

PUBLIC = [
    "ApiError",
    "AuthenticationError",
    "BufferClosedError",
    "BufferFullError",
    "BufferStats",
    "Cart",
    "CartItem",
    "ClientClosedError",
    "ContactCache",
    "EventSink",
    "FlushSettings",
    "ForkedProcessError",
    "Identity",
    "InvalidEventError",
    "InvalidSoftLoginError",
    "Journal",
    "MultipleMatchesError",
    "ProductView",
    "RateLimitError",
    "RetryPolicy",
    "SoftLogin",
    "Tracker",
    "TrackingBuffer",
    "TrackingClient",
    "TransportError",
    "Utm",
    "VoyadoError",
    "__version__",
    "decode_eclub",
    "identify",
    "instrument",
    "server_cookie_header",
]
FUNCTIONS = {"__version__", "decode_eclub", "identify", "instrument", "server_cookie_header"}


def test_all_is_pinned_and_sorted() -> None:
    """A new public name must be a decision: add it here too."""
    assert vt.__all__ == PUBLIC
    assert vt.__all__ == sorted(vt.__all__)


def test_every_public_name_exists() -> None:
    for name in vt.__all__:
        assert getattr(vt, name) is not None


def test_star_import_exports_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from voyado_tracking import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


def test_testing_module_exports() -> None:
    assert vt_testing.__all__ == [
        "Chaos", "EngageMail", "FakeClock", "FakeVoyado", "Fault", "RecordedRequest",
        "latest_carts", "make_eclub", "shop_traffic",
    ]


@pytest.mark.parametrize("name", [n for n in PUBLIC if n not in FUNCTIONS])
def test_public_classes_show_the_package_in_their_repr(name: str) -> None:
    cls = getattr(vt, name)
    assert cls.__module__ == "voyado_tracking"
    assert repr(cls) == f"<class 'voyado_tracking.{name}'>"


def test_client_repr_shows_the_package() -> None:
    client = vt.TrackingClient("https://tenant.voyado.com", "key")
    assert repr(client) == (
        "voyado_tracking.TrackingClient(base_url='https://tenant.voyado.com', api_key='***')"
    )


def test_version_is_a_string() -> None:
    assert isinstance(vt.__version__, str)
    assert vt.__version__.count(".") >= 1


def test_error_tree() -> None:
    """Every failure is a VoyadoError; InvalidEventError is also a ValueError."""
    assert issubclass(vt.InvalidEventError, ValueError)
    for name in ("ApiError", "TransportError", "BufferClosedError", "BufferFullError"):
        assert issubclass(getattr(vt, name), vt.VoyadoError)
    assert issubclass(vt.AuthenticationError, vt.ApiError)
    assert issubclass(vt.RateLimitError, vt.ApiError)
    assert issubclass(vt.MultipleMatchesError, vt.ApiError)
    assert issubclass(vt.InvalidSoftLoginError, vt.VoyadoError)
    assert issubclass(vt.InvalidSoftLoginError, ValueError)
    assert not issubclass(vt.TransportError, vt.ApiError)
    assert issubclass(vt.ClientClosedError, vt.VoyadoError)
    assert issubclass(vt.ForkedProcessError, vt.BufferClosedError)
    assert issubclass(vt.ForkedProcessError, RuntimeError)


def test_package_is_typed() -> None:
    assert (Path(vt.__file__).parent / "py.typed").is_file()


def _mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_public_api_usage_passes_mypy_strict() -> None:
    result = _mypy(USAGE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_catches_misuse_of_the_public_api(tmp_path: Path) -> None:
    """The types are real: wrong argument types are reported, not silently Any."""
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "import voyado_tracking as vt\n"
        "vt.CartItem(sku='a', quantity='2')\n"
        "vt.RetryPolicy(3)\n"
        "async def f(c: vt.TrackingClient, v: vt.ProductView) -> None:\n"
        "    await c.register_cart(v)\n"
    )
    result = _mypy(misuse)
    assert result.returncode == 1
    assert [line.split(":")[1] for line in result.stdout.splitlines() if ": error:" in line] == [
        "2",
        "3",
        "5",
    ]


def _load_usage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("typecheck_public_api", USAGE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_type_checked_usage_also_runs() -> None:
    """The checked file is real code: its awaited and fire-and-forget paths deliver."""
    usage = _load_usage()
    async with aiohttp.ClientSession() as session:
        assert await usage.send_awaited(session) == 2
    async with FakeVoyado() as fake, vt.TrackingClient(fake.url, fake.api_key) as client:
        assert await usage.fire_and_forget(client) == 2
        assert len(fake.product_views) == 1
        assert len(fake.carts) == 1
        assert await usage.look_up(client, fake) is not None
    assert usage.identify_request({}, {"_vaI": usage.CONTACT}) == [
        "cookie", vt.server_cookie_header(usage.CONTACT)]


def _parameters(obj: object) -> list[tuple[str, str]]:
    return [(p.name, p.kind.name) for p in inspect.signature(obj).parameters.values()]  # type: ignore[arg-type]


POS = "POSITIONAL_OR_KEYWORD"
KW = "KEYWORD_ONLY"


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("CartItem", [("sku", POS), ("quantity", POS)]),
        (
            "Cart",
            [
                (n, POS)
                for n in ("cart_reference", "contact_id", "items", "time", "language", "url")
            ] + [("checkout", KW)],
        ),
        ("Utm", [("key", POS), ("value", POS)]),
        (
            "ProductView",
            [
                (n, POS)
                for n in (
                    "item_id",
                    "contact_id",
                    "time",
                    "category",
                    "session_id",
                    "new_session",
                    "language",
                    "url",
                    "external_referrer",
                    "utm",
                )
            ],
        ),
        (
            "RetryPolicy",
            [(n, KW) for n in ("max_attempts", "initial_backoff", "max_backoff", "max_elapsed")],
        ),
    ],
)
def test_constructor_signatures_match_the_design(
    name: str, parameters: list[tuple[str, str]]
) -> None:
    assert _parameters(getattr(vt, name)) == parameters


def test_client_options_after_the_key_are_keyword_only() -> None:
    parameters = _parameters(vt.TrackingClient)
    assert parameters[:2] == [("base_url", POS), ("api_key", POS)]
    assert {kind for _, kind in parameters[2:]} == {KW}
    assert [n for n, _ in parameters[2:8]] == [
        "user_agent",
        "session",
        "timeout",
        "retry",
        "max_requests_per_second",
        "max_batch_size",
    ]
