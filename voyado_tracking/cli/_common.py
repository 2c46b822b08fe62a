"""What the commands of the CLI share: its name, exit statuses, the usage error, signals, the
``VOYADO_*`` environment, and the argparse types of its options (a bad value is a usage error
naming the option)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple, TypeAlias

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "Commands",
    "Stop",
    "UsageError",
    "VoyadoEnvironment",
    "bounded_float",
    "non_negative",
    "per_second",
    "positive_int",
    "probability",
    "seconds",
    "stop_on_signals",
    "voyado_environment",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

PROG: Final = "voyado-tracking"

# What a command's module is given to add its parser to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """A problem with the command line or its environment (exit status 2)."""


class VoyadoEnvironment(NamedTuple):
    """The Voyado connection the environment describes ("" or None where a variable is unset)."""

    base_url: str
    api_key: str
    user_agent: str | None


def voyado_environment() -> VoyadoEnvironment:
    """``VOYADO_BASE_URL``, ``VOYADO_API_KEY`` and ``VOYADO_USER_AGENT``, stripped; the one
    place the CLI reads them."""
    user_agent = os.environ.get("VOYADO_USER_AGENT", "").strip()
    return VoyadoEnvironment(
        base_url=os.environ.get("VOYADO_BASE_URL", "").strip(),
        api_key=os.environ.get("VOYADO_API_KEY", "").strip(),
        user_agent=user_agent or None,
    )


class Stop:
    """The first SIGINT or SIGTERM that stopped a command (None: none came)."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    @property
    def exit_status(self) -> int | None:
        return None if self.signal is None else 128 + int(self.signal)


@contextlib.contextmanager
def stop_on_signals(on_stop: Callable[[], None]) -> Iterator[Stop]:
    """Call *on_stop* on the first SIGINT or SIGTERM while the block runs; later ones are
    noted, not obeyed, so the shutdown that follows finishes (within its timeout)."""
    loop = asyncio.get_running_loop()
    stop = Stop()

    def handle(sig: signal.Signals) -> None:
        if stop.signal is None:
            stop.signal = sig
            on_stop()
        else:
            print(f"{PROG}: {sig.name}: already stopping", file=sys.stderr)

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handle, sig)
    try:
        yield stop
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


# -- argparse types --------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def bounded_float(
    what: str, accept: Callable[[float], bool], bounds: str
) -> Callable[[str], float]:
    """An argparse type for a float that *accept* allows (``bounds`` says which)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


seconds = bounded_float("a number of seconds", lambda v: 0 < v < float("inf"), "> 0")
per_second = bounded_float("a number per second", lambda v: 0 < v < float("inf"), "> 0")
non_negative = bounded_float("a number", lambda v: 0 <= v < float("inf"), ">= 0")
probability = bounded_float("a probability", lambda v: 0 <= v <= 1, "between 0 and 1")
