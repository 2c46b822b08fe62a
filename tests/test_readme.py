"""Every ```python block of README.md runs, on its own, against FakeVoyado."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Fences that are shown, not run: a ```python block must be runnable as it stands.
NOT_RUN = {"text", "bash", "console", "toml", "json", "ini", "markdown"}


def fenced_blocks() -> list[tuple[str, int, str]]:
    """(language, first line number, code) of every fenced block."""
    text = README.read_text(encoding="utf-8")
    return [
        (match[1], text.count("\n", 0, match.start()) + 1, match[2])
        for match in FENCE.finditer(text)
    ]


PYTHON_BLOCKS = [(line, code) for language, line, code in fenced_blocks() if language == "python"]


def test_the_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 2


def test_every_code_block_names_a_known_language() -> None:
    """A ```python block is executed; anything else must say it is text, bash, ..."""
    unknown = [
        (line, language) for language, line, _ in fenced_blocks()
        if language != "python" and language not in NOT_RUN
    ]
    assert unknown == []


@pytest.mark.parametrize(
    "code", [code for _, code in PYTHON_BLOCKS],
    ids=[f"README.md:{line}" for line, _ in PYTHON_BLOCKS],
)
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    """Each block runs in a fresh interpreter, so it must be self-contained."""
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
