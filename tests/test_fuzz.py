"""Fuzzing: whatever the text, the parser and passes raise nothing but SpecError."""

import contextlib

from helpers import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vggspec.compiler import SpecError, compile_spec, parse

REAL_SPECS = [p.read_text() for p in sorted(SPECS.glob("*.vgg"))]
ALPHABET = st.sampled_from(
    list("conv3-64 maxpoolLRNFC-4096soft-max,#\n\r\t x×()0123456789inputRGB")
)


def _parse_and_compile(text: str) -> None:
    try:
        spec = parse(text, "fuzz.vgg")
    except SpecError as err:
        assert "fuzz.vgg" in str(err)
        return
    with contextlib.suppress(SpecError):  # a well-formed spec may still not fit 32x32
        compile_spec(spec, (32, 32))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    _parse_and_compile(text)


@settings(max_examples=400, deadline=None)
@given(st.text(ALPHABET, max_size=120))
def test_text_made_of_spec_characters(text):
    _parse_and_compile(text)


@st.composite
def mutated_specs(draw) -> str:
    text = draw(st.sampled_from(REAL_SPECS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "swap"]))
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.text(ALPHABET, min_size=1, max_size=6)) + text[i:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + text[j:] + text[i:j]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutations_of_the_real_specs(text):
    _parse_and_compile(text)
