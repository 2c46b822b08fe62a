"""The voyado-tracking command line, run as a subprocess (``python -m voyado_tracking``)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import orjson
import pytest
from conftest import CONTACT, cart, fake_server_process

import voyado_tracking as vt
from voyado_tracking._eventfile import event_to_line, line_to_event
from voyado_tracking._wire import Event
from voyado_tracking.testing import Chaos, FakeVoyado

SECRET = "sk-live-very-secret-key-0123456789"


@attrs.frozen
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 60.0,
    python: tuple[str, ...] = ("-m", "voyado_tracking"),
) -> Result:
    """Run the CLI in a fresh interpreter while this loop keeps serving the fake."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VOYADO_")}
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, *python, *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def connection(fake: FakeVoyado) -> dict[str, str]:
    return {"VOYADO_BASE_URL": fake.url, "VOYADO_API_KEY": fake.api_key}


def view(item_id: str) -> vt.ProductView:
    return vt.ProductView(
        item_id, CONTACT, time="2026-11-27T10:00:00+01:00", category="shoes",
        session_id="s-1", new_session=True, utm=[vt.Utm("utm_source", "newsletter")],
    )


def write_events(path: Path, events: Sequence[Event]) -> Path:
    path.write_bytes(b"".join(event_to_line(e) for e in events))
    return path


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- help and usage ------------------------------------------------------------------------


async def test_help_lists_the_demo_send_and_fake_server_commands() -> None:
    result = await run_cli("--help")
    assert result.returncode == 0
    for command in ("demo", "send", "fake-server"):
        assert command in result.stdout


async def test_importing_the_cli_does_not_import_the_testing_helpers() -> None:
    code = (
        "import sys, voyado_tracking.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('voyado_tracking.testing')))"
    )
    result = await run_cli(python=("-c", code))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_console_script_runs_the_same_command_line() -> None:
    script = Path(sys.executable).with_name("voyado-tracking")
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    process = await asyncio.create_subprocess_exec(
        str(script), "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode().startswith(f"voyado-tracking {vt.__version__}")


# -- demo ----------------------------------------------------------------------------------


async def test_demo_exits_0_and_reports_when_every_event_arrived() -> None:
    result = await run_cli(
        "demo", "--shoppers", "12", "--events", "250", "--duration", "1", "--progress", "none"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("events enqueued", "cart updates collapsed", "requests sent", "events/s",
                 "retries", "dropped / dead-lettered"):
        assert line in result.stdout
    # delivery (3), identification (1), and no checked-out cart would mail (1)
    assert result.stdout.count("CHECK OK") == 5
    assert "CHECK FAIL" not in result.stdout
    assert "RESULT: OK" in result.stdout


async def test_demo_injects_faults_so_that_retries_show() -> None:
    result = await run_cli(
        "demo", "--shoppers", "10", "--events", "200", "--duration", "1", "--progress", "none",
        "--error-rate", "0.5",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    retries = next(line for line in result.stdout.splitlines() if "retries" in line)
    assert int(retries.split()[-1]) > 0


async def test_demo_progress_is_plain_lines_when_stderr_is_not_a_terminal() -> None:
    result = await run_cli("demo", "--shoppers", "10", "--events", "400", "--duration", "1.5")
    assert result.returncode == 0
    assert "shop traffic [" in result.stderr
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log


async def test_progress_degrades_to_plain_lines_without_rich() -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from voyado_tracking.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    result = await run_cli(
        "demo", "--shoppers", "10", "--events", "300", "--duration", "1.5",
        "--progress", "rich", python=("-c", code),
    )
    assert result.returncode == 0, result.stderr
    assert "shop traffic [" in result.stderr


def report_lines(out: str) -> list[str]:
    """The demo's output lines that depend on the seed only, not on timing."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "events enqueued" in line)
    return [lines[0].split(" against ")[0], *lines[start:start + 2],
            *(line for line in lines if line.startswith(("CHECK", "RESULT")))]


async def run_demo_in_process(*flags: str) -> None:
    from voyado_tracking.cli import _parser
    from voyado_tracking.cli._demo import run_demo

    assert await run_demo(_parser().parse_args(["demo", *flags]), "plain") == 0


async def test_a_seeded_demo_gives_the_same_events_and_end_state_every_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ("--seed", "11", "--shoppers", "15", "--events", "600", "--duration", "0.3")
    await run_demo_in_process(*flags)
    first = capsys.readouterr().out
    await run_demo_in_process(*flags)
    second = capsys.readouterr().out
    assert report_lines(first) == report_lines(second)
    assert "600 events (seed 11)" in first
    assert "carts:" in report_lines(first)[2]


async def test_the_demo_prints_its_100_percent_progress_line_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_demo_in_process("--shoppers", "5", "--events", "100", "--duration", "0.1")
    assert capsys.readouterr().err.count("100%") == 1


async def test_plain_progress_shows_100_percent_only_on_its_final_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While work goes on after the count is complete (a buffer draining), no tick says
    100%: only the final line does."""
    from voyado_tracking.cli._progress import progress

    polls = 0
    ticked = asyncio.Event()

    def poll() -> tuple[int, int | None, str]:
        nonlocal polls
        polls += 1
        if polls >= 4:
            ticked.set()
        return 10, 10, "draining"

    async with progress("plain", "work", poll, 0.001):
        await ticked.wait()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 4
    assert [line for line in lines if "100%" in line] == lines[-1:]


# -- the environment -----------------------------------------------------------------------


def test_the_voyado_environment_is_read_stripped_and_unset_is_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voyado_tracking.cli._common import voyado_environment

    monkeypatch.setenv("VOYADO_BASE_URL", " https://tenant.voyado.com ")
    monkeypatch.setenv("VOYADO_API_KEY", "key\n")
    monkeypatch.delenv("VOYADO_USER_AGENT", raising=False)
    assert voyado_environment() == ("https://tenant.voyado.com", "key", None)
    monkeypatch.setenv("VOYADO_USER_AGENT", "Shop/1.0")
    monkeypatch.delenv("VOYADO_API_KEY")
    assert voyado_environment() == ("https://tenant.voyado.com", "", "Shop/1.0")


# -- send ----------------------------------------------------------------------------------


async def test_send_delivers_good_lines_and_reports_bad_ones_by_line_number(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    good: list[Event] = [view("SKU-1"), cart("c-1", 0, "A", "B", language="sv-SE"), view("SKU-2")]
    lines = [
        event_to_line(good[0]),                                             # 1
        b'{"type": "product_view", "event": {"itemId": "X"\n',              # 2 broken JSON
        event_to_line(good[1]),                                             # 3
        b'{"type": "order", "event": {"id": 1}}\n',                         # 4 unknown type
        b'{"type": "product_view", "event": {"itemId": "X", "contactId": "nope"}}\n',  # 5
        b"\n",                                                              # 6 blank
        b"\xff\xfe\x00\x9c binary \x80\n",                                  # 7 bytes
        event_to_line(good[2]),                                             # 8
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))

    result = await run_cli("send", str(path), env=connection(fake))

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert [line.split(":")[1] for line in errors] == ["2", "4", "5", "7"]
    assert all(": skipped: " in line for line in errors)
    assert "not valid JSON" in errors[0]
    assert "type must be 'cart' or 'product_view'" in errors[1]
    assert "contactId" in errors[2]
    assert fake.product_views == [good[0], good[2]]
    assert fake.carts == {"c-1": good[1]}
    assert "lines 8 = read 3 + invalid 4 + too long 0 + blank 1 + unread 0" in result.stdout


async def test_send_of_an_all_good_file_exits_0(fake: FakeVoyado, tmp_path: Path) -> None:
    events = [view(f"SKU-{n}") for n in range(50)] + [cart(f"c-{n}", 0, "A") for n in range(20)]
    path = write_events(tmp_path / "events.jsonl", events)

    result = await run_cli("send", str(path), "--batch-size", "7", env=connection(fake))

    assert result.returncode == 0, result.stderr
    assert fake.product_views == events[:50]
    assert fake.carts == {c.cart_reference: c for c in events[50:]}  # type: ignore[union-attr]
    assert max(r.events for r in fake.requests) <= 7


async def test_send_collapses_updates_of_one_cart_to_the_latest(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    latest = cart("c-1", 0, "A", "B", minute=30)
    path = write_events(tmp_path / "e.jsonl", [cart("c-1", 0, "A", minute=10), latest,
                                               cart("c-1", minute=20)])
    result = await run_cli("send", str(path), env=connection(fake))
    assert result.returncode == 0
    assert fake.carts == {"c-1": latest}


async def test_a_byte_order_mark_at_the_start_of_the_file_is_ignored(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + event_to_line(view("SKU-1")))
    result = await run_cli("send", str(path), env=connection(fake))
    assert result.returncode == 0, result.stderr
    assert fake.product_views == [view("SKU-1")]


async def test_send_reads_stdin_when_the_file_is_a_dash(fake: FakeVoyado) -> None:
    events = [view("SKU-1"), view("SKU-2")]
    result = await run_cli("send", "-", env=connection(fake),
                           stdin=b"".join(event_to_line(e) for e in events))
    assert result.returncode == 0, result.stderr
    assert fake.product_views == events


async def test_send_flags_override_the_environment(fake: FakeVoyado, tmp_path: Path) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1")])
    env = {"VOYADO_BASE_URL": f"http://127.0.0.1:{closed_port()}", "VOYADO_API_KEY": "wrong"}
    result = await run_cli(
        "send", str(path), "--base-url", fake.url, "--api-key", fake.api_key,
        "--user-agent", "MyShop/2.3", env=env,
    )
    assert result.returncode == 0, result.stderr
    assert [r.user_agent for r in fake.requests] == ["MyShop/2.3"]


async def test_a_file_of_random_bytes_is_reported_line_by_line_and_the_rest_is_sent(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    rng = random.Random(4)
    noise = bytes(rng.getrandbits(8) for _ in range(20_000))
    good = view("SKU-after-the-noise")
    path = tmp_path / "noise.jsonl"
    path.write_bytes(noise + b"\n" + event_to_line(good))
    lines = (noise + b"\n").split(b"\n")
    bad_lines = [n for n, line in enumerate(lines[:-1], 1) if line.strip()]

    result = await run_cli("send", str(path), env=connection(fake))

    assert result.returncode == 1
    reported = [int(line.split(":")[1]) for line in result.stderr.splitlines()
                if line.startswith(f"{path}:")]
    assert reported == bad_lines
    assert fake.product_views == [good]


async def test_dry_run_sends_nothing_and_exits_0_for_a_valid_file(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1"), cart("c-1", 0, "A")])
    result = await run_cli("send", "--dry-run", str(path), env=connection(fake))
    assert result.returncode == 0, result.stderr
    assert fake.requests == []
    assert "2 valid events" in result.stdout
    assert "lines 2 = read 2 + invalid 0" in result.stdout


async def test_dry_run_exits_1_when_a_line_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(event_to_line(view("SKU-1")) + b"{oops\n")
    result = await run_cli("send", "--dry-run", str(path))
    assert result.returncode == 1
    assert f"{path}:2: skipped" in result.stderr


async def test_dry_run_needs_no_url_or_key(tmp_path: Path) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1")])
    result = await run_cli("send", "--dry-run", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["VOYADO_BASE_URL", "VOYADO_API_KEY"])
async def test_send_without_url_or_key_is_a_usage_error(tmp_path: Path, missing: str) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1")])
    env = {"VOYADO_BASE_URL": "https://tenant.voyado.com", "VOYADO_API_KEY": SECRET}
    del env[missing]
    result = await run_cli("send", str(path), env=env)
    assert result.returncode == 2
    assert missing in result.stderr
    assert SECRET not in result.stdout + result.stderr


async def test_api_key_never_appears_in_the_output(fake: FakeVoyado, tmp_path: Path) -> None:
    """A wrong key (401, dead-lettered) with verbose logging still never prints the key."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(event_to_line(view("SKU-1")) + b"not json\n")
    for args in (["--api-key", SECRET], ["--api-key", SECRET, "-v"],
                 ["--api-key", SECRET, "--base-url", "ftp://bad"]):
        result = await run_cli("send", str(path), "--base-url", fake.url, *args)
        assert result.returncode in (1, 2)
        assert SECRET not in result.stdout + result.stderr
    assert fake.requests
    assert not any(r.key_ok for r in fake.requests)


async def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    result = await run_cli("send", "--dry-run", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--timeout", "-1"], ["--bogus"]])
async def test_bad_flags_are_a_usage_error(tmp_path: Path, flags: list[str]) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1")])
    result = await run_cli("send", "--dry-run", str(path), *flags)
    assert result.returncode == 2


async def test_an_http_url_to_a_remote_host_is_a_usage_error(tmp_path: Path) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1")])
    result = await run_cli("send", str(path), "--base-url", "http://tenant.voyado.com",
                           env={"VOYADO_API_KEY": SECRET})
    assert result.returncode == 2
    assert "https" in result.stderr


async def test_undelivered_events_are_written_to_the_spool_and_exit_1(tmp_path: Path) -> None:
    events: list[Event] = [view("SKU-1"), cart("c-1", 0, "A", language="sv-SE"), view("SKU-2")]
    path = write_events(tmp_path / "e.jsonl", events)
    spool = tmp_path / "spool.jsonl"
    result = await run_cli(
        "send", str(path), "--spool", str(spool), "--retry-for", "0.3", "--timeout", "1",
        env={"VOYADO_BASE_URL": f"http://127.0.0.1:{closed_port()}", "VOYADO_API_KEY": "k"},
    )
    assert result.returncode == 1
    spooled = [line_to_event(line) for line in spool.read_bytes().splitlines()]
    assert sorted(map(repr, spooled)) == sorted(map(repr, events))
    assert "= sent 0 + collapsed 0 + dead-lettered 3 + spooled 0 + dropped 0" in result.stdout


async def test_a_spool_written_while_the_server_was_down_is_delivered_by_send(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    views = [view(f"SKU-{n}") for n in range(30)]
    carts = [cart(f"c-{n}", 0, "A", minute=n) for n in range(10)] + [cart("c-0", minute=59)]
    settings = vt.FlushSettings(flush_interval=0.01, retry=vt.RetryPolicy(
        max_attempts=None, initial_backoff=0.01, max_backoff=0.02, max_elapsed=30.0))
    async with vt.TrackingClient(f"http://127.0.0.1:{closed_port()}", "k",
                                 max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(client, settings, spool_path=spool)
        for event in views:
            buffer.enqueue(event)
        for update in carts:
            buffer.enqueue(update)
        await buffer.aclose(timeout=0.3)
    assert buffer.stats.spooled == 40  # 41 updates, one collapsed
    assert b'"reason"' in spool.read_bytes()

    result = await run_cli("send", str(spool), env=connection(fake))

    assert result.returncode == 0, result.stderr
    assert sorted(fake.product_views, key=lambda v: v.item_id) == sorted(
        views, key=lambda v: v.item_id
    )
    expected = {c.cart_reference: c for c in carts}  # the last c-0 update is the latest
    assert fake.carts == expected


async def test_an_interrupted_send_spools_what_it_had_not_delivered(tmp_path: Path) -> None:
    events = [view(f"SKU-{n}") for n in range(5)]
    path = write_events(tmp_path / "e.jsonl", events)
    spool = tmp_path / "spool.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "send", str(path), "--spool", str(spool),
        "--base-url", f"http://127.0.0.1:{closed_port()}", "--api-key", "k",
        "--retry-for", "600", "--progress", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    # The first failed delivery is logged: the send is now retrying, for up to 600 s.
    await asyncio.wait_for(process.stderr.readline(), 30)
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130, err  # 128 + SIGINT
    assert b"stopped by SIGINT" in err
    assert b"spooled 5" in out
    spooled = [line_to_event(line) for line in spool.read_bytes().splitlines()]
    assert spooled == events


async def test_the_spool_must_not_be_the_file_being_sent(tmp_path: Path) -> None:
    path = write_events(tmp_path / "e.jsonl", [view("SKU-1")])
    result = await run_cli("send", str(path), "--spool", str(path),
                           env={"VOYADO_BASE_URL": "https://t.voyado.com", "VOYADO_API_KEY": "k"})
    assert result.returncode == 2


# -- fake-server ---------------------------------------------------------------------------


async def test_fake_server_prints_url_and_key_on_one_line_and_stops_on_sigterm() -> None:
    async with fake_server_process("--api-key", "k-123") as server:
        assert server.api_key == "k-123"
        assert server.base_url.startswith("http://127.0.0.1:")
        async with vt.TrackingClient(server.base_url, "k-123") as client:
            await client.register_product_view(view("SKU-1"))
        err = await server.stop()
    assert server.process.returncode == 0
    assert b"1 product views" in err


async def test_fake_server_dump_writes_what_it_received_on_sigterm(tmp_path: Path) -> None:
    dump = tmp_path / "state.json"
    async with fake_server_process("--dump", str(dump)) as server:
        async with vt.TrackingClient(server.base_url, server.api_key) as client:
            await client.register_product_view(view("SKU-1"))
            await client.register_carts([cart("c-1", 0, "SKU-1", minute=5), cart("c-1", minute=1)])
        assert not dump.exists()  # written on exit, not before
        await server.stop()
    assert server.process.returncode == 0
    state = orjson.loads(dump.read_bytes())
    assert state["carts"]["c-1"]["items"] == [{"sku": "SKU-1", "quantity": 1}]  # latest time
    assert [v["itemId"] for v in state["productViews"]] == ["SKU-1"]
    assert state["requests"]["total"] == 2
    assert state["requests"]["byStatus"] == {"200": 2}


async def test_fake_server_dump_into_a_missing_directory_is_a_usage_error(
    tmp_path: Path,
) -> None:
    result = await run_cli("fake-server", "--dump", str(tmp_path / "no" / "state.json"))
    assert result.returncode == 2
    assert "--dump" in result.stderr


async def test_fake_server_refuses_a_non_loopback_host_without_public() -> None:
    result = await run_cli("fake-server", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "--public" in result.stderr


# -- send --journal ------------------------------------------------------------------------


async def leave_journal(fake: FakeVoyado, directory: Path, events: Sequence[Event]) -> None:
    """A buffer that could not deliver *events* before its close: they stay in its journal."""
    fake.chaos(Chaos(error_rate=1.0))
    async with vt.TrackingClient(fake.url, fake.api_key) as client, vt.TrackingBuffer(
        client, vt.FlushSettings(shutdown_timeout=0.2), journal=vt.Journal(directory)
    ) as buffer:
        for event in events:
            buffer.enqueue(event)
        await buffer.sync()
    fake.reset()


async def test_send_journal_delivers_what_a_journal_directory_holds(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    await leave_journal(fake, tmp_path, [view("a"), view("b"), cart("c1", 0, "SKU-1")])
    result = await run_cli("send", "--journal", str(tmp_path), "--progress", "plain",
                           env=connection(fake))
    assert result.returncode == 0, result.stderr
    assert "recovered 3 events" in result.stdout
    assert sorted(v.item_id for v in fake.product_views) == ["a", "b"]
    assert set(fake.carts) == {"c1"}


async def test_send_journal_of_an_empty_directory_exits_0(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    result = await run_cli("send", "--journal", str(tmp_path), env=connection(fake))
    assert result.returncode == 0, result.stderr
    assert "recovered 0 events" in result.stdout


@pytest.mark.parametrize("extra", [["events.jsonl"], ["--dry-run"]])
async def test_send_journal_with_a_file_or_dry_run_is_a_usage_error(
    fake: FakeVoyado, tmp_path: Path, extra: list[str]
) -> None:
    result = await run_cli("send", "--journal", str(tmp_path), *extra, env=connection(fake))
    assert result.returncode == 2
    assert "--journal" in result.stderr
