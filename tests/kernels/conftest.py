"""Kernel tests run on the CPU through Triton's interpreter, with every fresh output poisoned."""

import os

# Must happen before triton is first imported (the kernels are decorated at import time).
os.environ.setdefault("TRITON_INTERPRET", "1")

import zlib

import pytest
import torch
from kernel_checks import WORST_ERRORS
from vggspec.compiler.kernels import plan


@pytest.fixture(autouse=True)
def poison_new_outputs(monkeypatch):
    """Fill every kernel output with NaN before the kernel runs: unwritten elements fail."""
    monkeypatch.setattr(plan, "FILL_NEW_OUTPUTS", float("nan"))


@pytest.fixture
def rng(request) -> torch.Generator:
    """A generator seeded from the test id: fresh inputs per case, reproducible per run.

    Set KERNEL_TEST_SEED to draw a different set of inputs.
    """
    salt = os.environ.get("KERNEL_TEST_SEED", "0")
    return torch.Generator().manual_seed(zlib.crc32(f"{salt}:{request.node.nodeid}".encode()))


def pytest_terminal_summary(terminalreporter):
    if not WORST_ERRORS:
        return
    terminalreporter.section("kernel max relative error (max|a-b| / max|b|)")
    for what, (err, where) in sorted(WORST_ERRORS.items()):
        terminalreporter.write_line(f"{what:<28} {err:.3e}  ({where})")
