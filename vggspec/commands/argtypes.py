"""Flag values that argparse checks as it reads them: an image size, a whole number ≥ 1 or ≥ 0."""

from __future__ import annotations

import argparse


def image_size(text: str) -> tuple[int, int]:
    """`224` or `224x320` (height x width) for --input."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 224x224, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW such as 224x224, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def natural_int(text: str) -> int:
    """A whole number ≥ 0 (a seed: numpy's SeedSequence takes no negative one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return value
