"""Argument types shared by `evalsuite`'s own command line and the report commands' (compare, report, gate)."""

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
