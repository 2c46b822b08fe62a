"""A throwaway ``redis-server`` on a free 127.0.0.1 port, for fleet-mode tests, benchmarks and
demos: ``RedisServer(directory).start()``, then ``.url``, then ``.stop()``.

It needs the ``redis-server`` executable, not the redis Python package: readiness is a raw
``PING`` on the socket, so importing this module never imports redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port"]

_START_TIMEOUT = 10.0  # seconds for the server to answer PING


def free_port() -> int:
    """A loopback port nothing listens on (for a server started later, or a refused call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` in *directory* on a free port; without persistence unless
    *persistent* (append-only file, fsync on every write), so a restart keeps the data."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError("redis-server")
        self.executable = executable
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`, on the same port) and wait until it
        answers; RuntimeError if it does not within 10 s."""
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", *persistence, "--dir", str(self.directory),
             "--maxmemory-policy", "noeviction", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        # +PONG once ready; -LOADING while it reads its append-only file back.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); a no-op when it is not running."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
