"""Golden text: `vggspec compile` output and its error messages, byte for byte.

Every figure and every message a user sees from `vggspec compile` is kept under
tests/golden/; a change to any of them fails here and must be looked at. Refresh the
files on purpose with `VGGSPEC_UPDATE_GOLDEN=1 pytest tests/test_golden_text.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SPECS

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("VGGSPEC_UPDATE_GOLDEN") == "1"

NETS = ("A", "A-LRN", "B", "C", "D", "E", "D-BN", "demo", "D-loc")
VARIANTS = {
    "table": (),
    "json": ("--json",),
    "dense384": ("--dense", "--input", "384"),
    "dense384.json": ("--dense", "--input", "384", "--json"),
    "ir": ("--emit", "ir"),
    "unfused.ir": ("--no-fuse", "--emit", "ir"),
    "dot": ("--emit", "dot"),
    "spec": ("--emit", "spec"),
    "ast": ("--emit", "ast"),
    "b256.bf16": ("--batch", "256", "--dtype", "bfloat16"),
}

# Specs that must fail, each with the message a user sees (stderr, exit status 2).
BAD_SPECS = {
    "odd-kernel": "input 32x32 RGB\nconv3-64 conv4-64\n",
    "glued": "conv3-64conv3-64\n",
    "unknown-word": "conv3-64\n  pool\n",
    "after-softmax": "conv3-64 soft-max conv3-64\n",
    "zero-channels": "conv3-0\n",
    "zero-fc": "FC-0\n",
    "zero-height": "input 0x32 RGB conv3-8\n",
    "colour": "input 32x32 CMYK conv3-8\n",
    "huge-number": "conv3-1234567890123\n",
    "ends-early": "input 32x\n",
    "empty": "# just a comment\n",
    "expected-words": "input 32x32 RGB\nconv3-64 blah\n",
    "conv-after-fc": "input 32x32 RGB\nconv3-64 maxpool\nconv3-128 FC-10 conv3-128\n",
    "collapse": "input 8x8 RGB\nconv3-8 maxpool maxpool maxpool maxpool\nFC-10 soft-max\n",
    "pool-after-fc": "input 32x32 RGB\nconv3-8 FC-10 maxpool\n",
    "lrn-after-fc": "input 32x32 RGB\nconv3-8 FC-10 LRN\n",
    "bn-first": "input 32x32 RGB\nBN conv3-8\n",
    "bn-after-pool": "input 32x32 RGB\nconv3-8 maxpool BN\n",
    "bn-twice": "input 32x32 RGB\nconv3-8 BN BN\n",
    "bn-after-softmax": "input 32x32 RGB\nconv3-8 FC-10 soft-max BN\n",
    "box-width": "input 32x32 RGB\nconv3-8 FC-4096 FC-10 box\n",
    "box-after-conv": "input 32x32 RGB\nconv3-8 maxpool box\n",
    "after-box": "input 32x32 RGB\nconv3-8 FC-8 box FC-8\n",
}


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no golden file {path}: run with VGGSPEC_UPDATE_GOLDEN=1"
    expected = path.read_text()
    if text != expected:
        got, want = text.splitlines(), expected.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        shown = lambda lines: lines[first] if first < len(lines) else "(ends)"  # noqa: E731
        pytest.fail(
            f"{name} differs from its golden file at line {first + 1}:\n"
            f"  got:    {shown(got)!r}\n  golden: {shown(want)!r}"
        )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("net", NETS)
def test_compile_output_is_golden(cli, monkeypatch, net, variant):
    monkeypatch.chdir(SPECS.parent)  # paths in the output read as a user types them
    code, out, err = cli("compile", f"specs/{net}.vgg", *VARIANTS[variant])
    assert (code, err) == (0, "")
    _check(f"compile/{net}.{variant}.txt", out)


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_compile_errors_are_golden(cli, monkeypatch, tmp_path, case):
    monkeypatch.chdir(tmp_path)
    Path(f"{case}.vgg").write_text(BAD_SPECS[case])
    code, out, err = cli("compile", f"{case}.vgg")
    assert (code, out) == (2, "")
    _check(f"errors/{case}.txt", err)


def test_an_input_size_too_small_for_the_net_is_golden(cli, monkeypatch):
    monkeypatch.chdir(SPECS.parent)
    code, out, err = cli("compile", "specs/D.vgg", "--input", "16")
    assert (code, out) == (2, "")
    _check("errors/D-at-16.txt", err)
