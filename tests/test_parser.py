"""The notation: every accepted spelling, and errors that point at the text."""

import pytest
from vggspec.compiler import Conv, FullyConnected, Input, Lrn, MaxPool, SoftMax, SpecError, parse


def test_paper_header_and_slide_notation():
    spec = parse("input (224×224 RGB image)\nconv-64 conv3-64 maxpool FC-10 softmax")
    assert spec.input == Input(224, 224, "RGB")
    assert spec.layers == (Conv(3, 64), Conv(3, 64), MaxPool(), FullyConnected(10), SoftMax())


@pytest.mark.parametrize(
    "header, expected",
    [
        ("input 224x224 RGB", Input(224, 224, "RGB")),
        ("input 224×224 RGB", Input(224, 224, "RGB")),
        ("INPUT 64X48 rgb", Input(64, 48, "RGB")),
        ("input 28x28 gray", Input(28, 28, "gray")),
        ("input (32×40 grey image)", Input(32, 40, "gray")),
        ("input (32x32 RGB)", Input(32, 32, "RGB")),
    ],
)
def test_input_lines(header, expected):
    assert parse(f"{header}\nconv3-8").input == expected


def test_missing_input_line_means_224_rgb():
    assert parse("conv3-8 maxpool").input == Input(224, 224, "RGB")


def test_separators_and_crlf():
    spec = parse("input 32x32 RGB\r\nconv3-8,conv5-8,,\tLRN\r\n\r\nmaxpool , FC-7")
    assert spec.layers == (Conv(3, 8), Conv(5, 8), Lrn(), MaxPool(), FullyConnected(7))


def test_leading_comment_block_is_the_description_other_comments_are_not():
    spec = parse("# VGG D\n#   from Table 1  \n\ninput 32x32 RGB # not this\nconv3-8 # nor this\n")
    assert spec.description == ("VGG D", "from Table 1")


def test_locations_are_carried_but_not_compared():
    a, b = parse("conv3-8"), parse("\n\n   conv3-8")
    assert a == b
    assert (a.layers[0].loc.line, a.layers[0].loc.column) == (1, 1)
    assert (b.layers[0].loc.line, b.layers[0].loc.column) == (3, 4)


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, "bad.vgg")
    return info.value


@pytest.mark.parametrize(
    "text, line, column, fragment",
    [
        ("input 32x32 RGB\nconv3-64 conv4-64", 2, 10, "must be odd"),
        ("conv3-64conv3-64", 1, 1, "unknown word 'conv3-64conv3-64'"),
        ("conv3-64\n  pool", 2, 3, "unknown word 'pool'"),
        ("conv3-64 soft-max conv3-64", 1, 19, "after soft-max"),
        ("conv3-0", 1, 1, "conv channels"),
        ("FC-0", 1, 1, "FC size"),
        ("input 0x32 RGB conv3-8", 1, 1, "input height"),
        ("input 32x32 CMYK conv3-8", 1, 13, "unknown word 'CMYK'"),
        ("conv3-1234567890123", 1, 1, "out of range"),
        ("input 32x", 1, 10, "ends too early"),
    ],
)
def test_errors_point_at_the_text(text, line, column, fragment):
    err = _error(text)
    assert fragment in str(err)
    assert (err.loc.line, err.loc.column) == (line, column)
    message = str(err)
    assert message.startswith(f"bad.vgg:{line}:{column}: error:")
    source_line, caret_line = message.split("\n")[1:3]
    assert caret_line.strip().startswith("^")
    indent = "  "  # the excerpt is indented by two spaces
    assert source_line == indent + text.split("\n")[line - 1]
    assert caret_line.index("^") == len(indent) + column - 1


def test_errors_say_what_was_expected():
    err = _error("input 32x32 RGB\nconv3-64 blah")
    assert "expected:" in str(err)
    assert "maxpool" in err.expected and "conv<k>-<channels>" in err.expected


@pytest.mark.parametrize("text", ["", "   \n\n", "# just a comment\n", ",,,"])
def test_empty_specs(text):
    assert "empty" in str(_error(text))
