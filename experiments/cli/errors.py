"""The command line's one error path.

Expected errors (bad options, files, config keys) raise :class:`UsageError` (or a
``ValueError`` / ``TypeError`` from a library check, which names its parameter); the command
line prints them as one line, ``adaptive-tts: error: <what>``, and exits with code 2.
``--debug`` or ``ADAPTIVE_TTS_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

from typing import Any


class UsageError(ValueError):
    """A bad option, file or key: ``what``, ``where`` (the option/file/key) and ``allowed``."""

    def __init__(self, what: str, where: str | None = None, allowed: str | None = None) -> None:
        parts = [what] + [p for p in (where, allowed) if p]
        super().__init__(", ".join(parts))
        self.what, self.where, self.allowed = what, where, allowed


def usage(option: str, value: Any, allowed: str) -> UsageError:
    """``usage("--batch", 0, "an integer >= 1")`` -> ``--batch=0 is invalid, allowed: ...``."""
    return UsageError(f"{option}={value!r} is invalid", None, f"allowed: {allowed}")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (newlines folded), prefixed for the command line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return f"adaptive-tts: error: {text}"
