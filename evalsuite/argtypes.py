"""Argument types shared by the command lines (run, score, data, annotate, and the report commands): one rule each."""

from __future__ import annotations

import argparse


def whole_number(text: str, message: str) -> int:
    """`text` as a whole number >= 1, else argparse's one-line error with `message` (which names the flag)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(message)
    return n


def positive(text: str) -> int:
    """An argparse `type` for a count that must be >= 1 (0 would silently do nothing, or wait forever).

    argparse puts the flag before the message: `argument --batch: expected a whole number >= 1, got '0'`."""
    return whole_number(text, f"expected a whole number >= 1, got '{text}'")
