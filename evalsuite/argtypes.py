"""Argument types shared by the command lines (run, score, data, annotate, and the report commands): one rule each."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(text: str, message: str) -> int:
    """`text` as a whole number >= 1, else argparse's one-line error with `message` (which names the flag)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(message)
    return n


def positive(flag: str) -> Callable[[str], int]:
    """An argparse `type` for a count that must be >= 1 (0 would silently do nothing, or wait forever)."""

    def parse(text: str) -> int:
        return whole_number(text, f"expected a whole number >= 1, got '{text}'")  # argparse names the flag

    parse.__name__ = flag.lstrip("-").replace("-", "_")  # how argparse refers to the type in its own messages
    return parse
