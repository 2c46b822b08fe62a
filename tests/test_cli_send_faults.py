"""``voyado-tracking send`` under faults, as a real subprocess: signals, FIFOs and pipes that
stay open, huge lines, and the spool it writes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from conftest import eventually

import voyado_tracking as vt
from voyado_tracking._eventfile import event_to_line, line_to_event
from voyado_tracking.testing import Chaos, FakeVoyado, Fault

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
LINES = re.compile(
    r"lines (\d+) = read (\d+) \+ invalid (\d+) \+ too long (\d+) \+ blank (\d+) "
    r"\+ unread (\d+)"
)
EVENTS = re.compile(
    r"= sent (\d+) \+ collapsed (\d+) \+ dead-lettered (\d+) \+ spooled (\d+) \+ dropped (\d+)"
)


def view(n: int) -> vt.ProductView:
    return vt.ProductView(f"SKU-{n}", CONTACT, time="2026-11-27T10:00:00+01:00")


def lines_of(*events: vt.ProductView) -> bytes:
    return b"".join(event_to_line(e) for e in events)


def summary(stdout: str) -> tuple[dict[str, int], dict[str, int]]:
    """The two accounting lines of the summary, as numbers."""
    lines, events = LINES.search(stdout), EVENTS.search(stdout)
    assert lines is not None, stdout
    assert events is not None, stdout
    names = ("lines", "read", "invalid", "too_long", "blank", "unread")
    outcomes = ("sent", "collapsed", "dead_lettered", "spooled", "dropped")
    return (dict(zip(names, map(int, lines.groups()), strict=True)),
            dict(zip(outcomes, map(int, events.groups()), strict=True)))


@contextlib.asynccontextmanager
async def send(
    *args: str, fake: FakeVoyado | None = None, stdin: int | None = None,
    python: Sequence[str] = (),
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m voyado_tracking send ARGS`` against *fake*; killed if the test fails."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VOYADO_")}
    if fake is not None:
        environment.update(VOYADO_BASE_URL=fake.url, VOYADO_API_KEY=fake.api_key)
    process = await asyncio.create_subprocess_exec(
        sys.executable, *python, "-m", "voyado_tracking", "send", "--progress", "none", *args,
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment,
        umask=0o022,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def finish(process: asyncio.subprocess.Process, timeout: float = 60.0
                 ) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- signals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_stopped_send_exits_128_plus_the_signal_and_accounts_for_every_line(
    fake: FakeVoyado, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """Nothing read is lost (sent or spooled, the event in hand included), and the lines
    never read are counted: the summary adds up to every line of the file."""
    events = [view(n) for n in range(20_000)]
    path = tmp_path / "e.jsonl"
    path.write_bytes(lines_of(*events))
    spool = tmp_path / "spool.jsonl"
    fake.latency = 0.2
    async with send(str(path), "--spool", str(spool), "--batch-size", "100", "--max-rps", "2",
                    "--shutdown-timeout", "1", fake=fake) as process:
        await eventually(lambda: len(fake.requests) >= 1, timeout=30)
        process.send_signal(sig)
        returncode, out, err = await finish(process)

    assert returncode == status, err
    assert f"stopped by {sig.name}" in err
    lines, outcomes = summary(out)
    assert lines["lines"] == 20_000
    assert lines["read"] + lines["invalid"] + lines["too_long"] + lines["blank"] \
        + lines["unread"] == 20_000
    assert lines["unread"] > 0
    assert sum(outcomes.values()) == lines["read"]
    spooled = [line_to_event(line) for line in spool.read_bytes().splitlines()]
    assert len(spooled) == outcomes["spooled"] > 0
    delivered = {v.item_id for v in fake.product_views} | {e.item_id for e in spooled}
    assert delivered == {e.item_id for e in events[: lines["read"]]}


async def test_a_signal_stops_send_within_its_shutdown_timeout_while_voyado_hangs(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(lines_of(*(view(n) for n in range(50))))
    fake.script(Fault(status=200, process=True, delay=5.0))  # the answer hangs
    async with send(str(path), "--shutdown-timeout", "1", "--timeout", "30",
                    fake=fake) as process:
        await eventually(lambda: len(fake.requests) >= 1, timeout=30)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode, out, err = await finish(process, timeout=30)
        elapsed = time.monotonic() - started
    assert returncode == 143, err
    assert elapsed < 1 + 2.0
    _, outcomes = summary(out)
    assert outcomes["dropped"] == 50  # no --spool: counted, never silently lost


# -- FIFOs and pipes that stay open ----------------------------------------------------------


async def open_writer(fifo: Path) -> int:
    """The FIFO's write end, once the command has opened its read end."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def test_send_from_a_fifo_sends_each_line_as_it_arrives(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    """Nothing waits for a block to fill or for the writer to close."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    async with send(str(fifo), fake=fake) as process:
        writer = await open_writer(fifo)
        try:
            os.write(writer, lines_of(view(1)))
            await eventually(lambda: len(fake.product_views) == 1, timeout=10)
            os.write(writer, lines_of(view(2)))
            await eventually(lambda: len(fake.product_views) == 2, timeout=10)
            process.send_signal(signal.SIGTERM)
            returncode, out, err = await finish(process, timeout=30)
        finally:
            os.close(writer)
    assert returncode == 143, err
    assert fake.product_views == [view(1), view(2)]
    lines, outcomes = summary(out)
    assert (lines["lines"], lines["read"], outcomes["sent"]) == (2, 2, 2)
    assert "it was still open" in out


async def test_send_from_a_pipe_that_stays_open_sends_each_line_as_it_arrives(
    fake: FakeVoyado,
) -> None:
    read_end, write_end = os.pipe()
    try:
        async with send("-", fake=fake, stdin=read_end) as process:
            os.close(read_end)
            read_end = -1
            os.write(write_end, lines_of(view(1), view(2)))
            await eventually(lambda: len(fake.product_views) == 2, timeout=10)
            process.send_signal(signal.SIGINT)
            returncode, _, err = await finish(process, timeout=30)
    finally:
        os.close(write_end)
        if read_end >= 0:
            os.close(read_end)
    assert returncode == 130, err
    assert fake.product_views == [view(1), view(2)]


async def test_sigterm_stops_send_waiting_for_a_fifo_writer_that_never_comes(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    async with send(str(fifo), "--shutdown-timeout", "1", fake=fake) as process:
        await asyncio.sleep(1.0)  # the command is up, waiting for a writer
        process.send_signal(signal.SIGTERM)
        returncode, out, err = await finish(process, timeout=10)
    assert returncode == 143, err
    assert summary(out)[0]["lines"] == 0


# -- long lines ------------------------------------------------------------------------------


async def test_a_line_over_max_line_bytes_is_skipped_by_number_and_the_rest_sent(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    path = tmp_path / "e.jsonl"
    long_line = b'{"type": "product_view", "event": {"itemId": "' + b"x" * 500 + b'"}}\n'
    path.write_bytes(lines_of(view(1)) + long_line + lines_of(view(3)))
    async with send(str(path), "--max-line-bytes", "200", fake=fake) as process:
        returncode, out, err = await finish(process)
    assert returncode == 1
    assert f"{path}:2: skipped: line is longer than --max-line-bytes (200 bytes)" in err
    assert fake.product_views == [view(1), view(3)]
    assert summary(out)[0] == {"lines": 3, "read": 2, "invalid": 0, "too_long": 1, "blank": 0,
                               "unread": 0}


# Runs the command as its own child, so RUSAGE_CHILDREN is that command's peak alone.
PEAK = (
    "import resource, subprocess, sys\n"
    "status = subprocess.call([sys.executable, *sys.argv[1:]])\n"
    "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(status)\n"
)


async def peak_kib(fake: FakeVoyado, path: Path) -> tuple[int, int, str]:
    async with send(str(path), fake=fake, python=("-c", PEAK)) as process:
        returncode, _, err = await finish(process, timeout=120)
    match = re.search(r"^peak (\d+)$", err, re.M)
    assert match is not None, err
    return returncode, int(match[1]), err


async def test_a_huge_line_is_skipped_in_bounded_memory(fake: FakeVoyado, tmp_path: Path) -> None:
    """A 64 MiB line (a JSON array export, say) costs far less memory than its size."""
    small = tmp_path / "small.jsonl"
    small.write_bytes(lines_of(view(1)))
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as out:
        out.write(b"[")
        for _ in range(64):
            out.write(b'{"itemId": "SKU", "contactId": "c"},' * 30_000)  # about 1 MiB
        out.write(b"{}]\n")
        out.write(lines_of(view(2)))
    assert huge.stat().st_size > 64 * 2**20
    _, baseline, _ = await peak_kib(fake, small)
    returncode, peak, err = await peak_kib(fake, huge)
    # ru_maxrss is in KiB on Linux: well under the line's 64 MiB.
    assert peak - baseline < 16 * 1024, (baseline, peak)
    assert returncode == 1, err
    assert f"{huge}:1: skipped: line is longer than --max-line-bytes" in err
    assert fake.product_views == [view(1), view(2)]


# -- the spool -------------------------------------------------------------------------------


async def test_the_spool_of_dead_letters_is_created_private(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    """It holds contact ids: mode 0600, whatever the umask (022 here)."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(lines_of(view(1), view(2)))
    spool = tmp_path / "spool.jsonl"
    fake.reject_item_ids = {"SKU-2"}
    async with send(str(path), "--spool", str(spool), fake=fake) as process:
        returncode, _, err = await finish(process)
    assert returncode == 1, err
    assert [line_to_event(line) for line in spool.read_bytes().splitlines()] == [view(2)]
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600



async def test_send_of_stdin_from_a_device_the_loop_cannot_poll_reads_it_to_its_end(
    fake: FakeVoyado,
) -> None:
    """/dev/null (which epoll refuses) is read like a file: the command ends, exit 0."""
    async with send("-", fake=fake) as process:  # stdin is /dev/null
        returncode, out, err = await finish(process, timeout=30)
    assert returncode == 0, err
    assert summary(out)[0]["lines"] == 0


async def test_a_stopped_send_journal_exits_143_and_leaves_what_it_holds_in_the_journal(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    fake.chaos(Chaos(error_rate=1.0))  # Voyado fails throughout: the events stay journaled
    async with vt.TrackingClient(fake.url, fake.api_key) as client, vt.TrackingBuffer(
        client, vt.FlushSettings(shutdown_timeout=0.2), journal=vt.Journal(tmp_path)
    ) as buffer:
        for n in range(3):
            buffer.enqueue(view(n))
        await buffer.sync()
    sent_before = len(fake.requests)
    async with send("--journal", str(tmp_path), "--shutdown-timeout", "1",
                    fake=fake) as process:
        await eventually(lambda: len(fake.requests) > sent_before, timeout=30)
        process.send_signal(signal.SIGTERM)
        returncode, out, err = await finish(process, timeout=30)
    assert returncode == 143, err
    assert "stopped by SIGTERM" in err
    assert "left in the journal 3" in out
