"""One-line renderings of exception messages for user-facing errors (exit code 2, no traceback)."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(text: object) -> str:
    """The whole text with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())
