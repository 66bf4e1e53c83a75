"""Fuzzing by volume: 10,000 mutants of the real specs raise nothing but SpecError, and the CLI
answers a sample of them with exit 2 and one error, never a traceback."""

from __future__ import annotations

import functools
import random
import re

import pytest
from helpers import SPECS, vggspec_cmd
from vggspec.compiler import SpecError, compile_spec, parse

REAL_SPECS = [p.read_text() for p in sorted(SPECS.glob("*.vgg"))]
TOKENS = re.compile(r"\s+|\d+|[A-Za-z]+|.", re.S)
MUTANTS = 10_000
CLI_SAMPLE = 200

# Characters a pasted spec may carry: look-alikes of the notation's own (× − ０-９ fullwidth),
# invisible ones (zero-width space, BOM, RTL mark), combining accents, other scripts, emoji,
# line and paragraph separators, and a lone surrogate (legal in a str, not in a file).
UNICODE = (
    "×x−‐–—－０１２３４５６７８９ＲＧＢｃｏｎｖ\u200b\ufeff\u200f\u0301\u0308"
    "вгдконв卷积🙂\u2028\u2029\x0b\x0c\x85\ud800"
)
HUGE = ("9" * 30, "1" + "0" * 400, "18446744073709551616", "2147483648", "0" * 50, "00064")


def _mutate(text: str, rng: random.Random) -> str:
    """One to four random edits, by token and by byte."""
    for _ in range(rng.randint(1, 4)):
        tokens = TOKENS.findall(text) or [""]
        i, j = rng.randrange(len(tokens)), rng.randrange(len(tokens))
        kind = rng.choice(("swap", "delete", "duplicate", "flip", "huge", "unicode", "splice"))
        if kind == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "delete":
            del tokens[i : i + rng.randint(1, 3)]
        elif kind == "duplicate":
            tokens[i:i] = tokens[min(i, j) : max(i, j) + 1][:6] * rng.randint(1, 3)
        elif kind == "huge":
            numbers = [k for k, t in enumerate(tokens) if t.isdigit()]
            tokens[rng.choice(numbers) if numbers else i] = rng.choice(HUGE)
        elif kind == "unicode":
            tokens.insert(i, "".join(rng.choice(UNICODE) for _ in range(rng.randint(1, 3))))
        elif kind == "splice":  # the head of one spec onto the tail of another
            other = rng.choice(REAL_SPECS)
            tokens = tokens[:i] + TOKENS.findall(other)[rng.randrange(len(other) // 2) :]
        text = "".join(tokens)
        if kind == "flip":
            data = bytearray(text.encode("utf-8", "surrogatepass"))
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            text = data.decode("utf-8", "replace")
    return text


@functools.cache
def mutants(n: int, seed: int = 16) -> tuple[str, ...]:
    """The first `n` mutants of `seed`'s sequence (a prefix of any longer one)."""
    if n < MUTANTS and seed == 16:  # the big test's list, made once
        return mutants(MUTANTS)[:n]
    rng = random.Random(seed)
    return tuple(_mutate(rng.choice(REAL_SPECS), rng) for _ in range(n))


def _outcome(text: str) -> str:
    """'parsed', 'compiled' or 'error'; any exception but SpecError escapes."""
    try:
        spec = parse(text, "fuzz.vgg")
    except SpecError as err:
        assert str(err).startswith("fuzz.vgg"), str(err)[:200]
        return "error"
    try:
        compile_spec(spec)  # at the spec's own input size, huge or not
    except SpecError:
        return "parsed"
    return "compiled"


def test_ten_thousand_mutants_of_the_real_specs_raise_only_spec_error():
    outcomes = {"error": 0, "parsed": 0, "compiled": 0}
    for text in mutants(MUTANTS):
        outcomes[_outcome(text)] += 1
    # The generator reaches every stage: bad text, nets that parse but do not compile
    # (seed 16: 51 of them), and nets that still compile.
    assert sum(outcomes.values()) == MUTANTS
    assert min(outcomes.values()) >= MUTANTS // 500, outcomes


def test_the_mutants_are_varied():
    texts = mutants(2000)
    assert len(set(texts)) > 1900
    joined = "".join(texts)
    for needle in ("\u200b", "×", "1" + "0" * 400, "\ufffd", "卷"):
        assert needle in joined, needle


def _rejected_mutants(n: int) -> list[str]:
    return [t for t in mutants(n * 4, seed=61) if _outcome(t) == "error"][:n]


def test_the_cli_answers_rejected_mutants_with_exit_2_and_one_located_error(cli, tmp_path):
    for k, text in enumerate(_rejected_mutants(CLI_SAMPLE)):
        path = tmp_path / f"m{k}.vgg"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        code, out, err = cli("compile", path)
        assert code == 2 and out == "", (text, err)
        assert err.startswith(f"{path}"), err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [
        b"input 224x224 RGB\nconv3-64 \xff\xfe maxpool\n",  # not UTF-8
        "input 2\u200b24x224 RGB\nconv3-64 maxpool FC-10 soft-max\n".encode(),
        b"input 224x224 RGB\nconv3-" + b"9" * 5000 + b" maxpool FC-10 soft-max\n",
        b"input 224x224 RGB\nconv3-64\x00 maxpool\n",
    ],
    ids=["bad-utf8", "zero-width", "huge-number", "nul"],
)
def test_a_separate_process_exits_2_without_a_traceback(tmp_path, content):
    path = tmp_path / "bad.vgg"
    path.write_bytes(content)
    result = vggspec_cmd("compile", path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith(str(path)), result.stderr
