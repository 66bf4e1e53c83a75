"""Round trips: parse(print(ast)) == ast, print(parse(text)) is a fixed point."""

import pytest
from helpers import SPECS
from hypothesis import given, settings
from strategies import specs, spelled_specs
from vggspec.compiler import format_spec, parse


@settings(max_examples=300, deadline=None)
@given(specs())
def test_parse_of_print_is_identity(spec):
    assert parse(format_spec(spec)) == spec


@settings(max_examples=300, deadline=None)
@given(spelled_specs())
def test_any_spelling_parses_to_its_spec_and_prints_to_a_fixed_point(spelled):
    spec, text = spelled
    parsed = parse(text)
    assert parsed == spec
    canonical = format_spec(parsed)
    assert format_spec(parse(canonical)) == canonical


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.vgg")), ids=lambda p: p.name)
def test_spec_files_are_canonical(path):
    text = path.read_text()
    assert format_spec(parse(text)) == text
