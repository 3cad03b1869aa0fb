"""Helpers of the bad-input tests: what a directory holds, and the CLI's one error line."""

from __future__ import annotations

from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to assert that nothing was written)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr's only line, which must be the CLI's ``adaptive-tts: error: ...`` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adaptive-tts: error:"), err
    return err[0]
