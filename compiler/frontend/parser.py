"""Text → Spec: the lark grammar in vgg.lark, with errors that point at the text."""

from __future__ import annotations

import re
from functools import cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..ir.ops import LAYERS
from ..ir.ops.base import number
from .ast import Input, Loc, Spec, misplaced
from .errors import SpecError

# The comments before the first token are the spec's description.
_LEADING_COMMENT = re.compile(r"[ \t\f\r\n,]*#([^\n]*)")

# How lark's terminal names read to a person: the layers' from the registry, and these.
_EXPECTED_WORDS = {
    "INPUT": "input",
    "INT": "a number",
    "_TIMES": "'x'",
    "COLOUR": "RGB or gray",
    "IMAGE": "'image'",
    "LPAR": "'('",
    "RPAR": "')'",
    "$END": "end of spec",
    "<END-OF-FILE>": "end of spec",
}


@cache
def _parser() -> Lark:
    return Lark.open(
        "vgg.lark",
        rel_to=__file__,
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def _loc(token: Token) -> Loc:
    return Loc(token.line, token.column, token.end_line, token.end_column)


def _number(digits: str, what: str, token: Token) -> int:
    return number(digits, what, _loc(token))


def _layer(tree: Tree):
    token = tree.children[0]
    loc = _loc(token)
    try:
        return LAYERS[tree.data].read(str(token), loc)
    except ValueError as err:
        raise SpecError(f"{token}: {err}", loc) from None


def _input(tree: Tree) -> Input:
    height, width, colour = (c for c in tree.children if c.type in ("INT", "COLOUR"))
    loc = Loc(tree.meta.line, tree.meta.column, tree.meta.end_line, tree.meta.end_column)
    name = "RGB" if colour.lower() == "rgb" else "gray"
    try:
        return Input(
            _number(height, "input height", height),
            _number(width, "input width", width),
            name,
            loc,
        )
    except ValueError as err:
        raise SpecError(str(err), loc) from None


def _description(text: str) -> tuple[str, ...]:
    lines, pos = [], 0
    while match := _LEADING_COMMENT.match(text, pos):
        lines.append(match.group(1).strip())
        pos = match.end()
    return tuple(lines)


def _expected(names, text: str = "", pos: int = 0) -> str:
    """How the terminals `names` read; a word that may only follow one kind of layer (box
    after an FC) is left out when the word before `pos` is not of that kind."""
    known = {**{cls.terminal: cls.expected for cls in LAYERS.values()}, **_EXPECTED_WORDS}
    before = [w for w in re.split(r"[ \t\f\r\n,]+", re.sub(r"#[^\n]*", "", text[:pos])) if w]
    previous = before[-1] if before else ""
    names = [
        name
        for name in names
        if (cls := _LAYER_OF.get(name)) is None
        or cls.follows is None
        or re.fullmatch(_parser().get_terminal(cls.follows).pattern.to_regexp(), previous, re.I)
    ]
    words = sorted({known.get(name, name) for name in names})
    return ", ".join(words)


_LAYER_OF = {cls.terminal: cls for cls in LAYERS.values()}


# The words that end a net, as an error names them.
_HEADS = ((r"soft-?max", "soft-max"), (r"(?<![A-Za-z0-9_\-])box", "box"))


def _after_head(err: UnexpectedToken, text: str) -> str | None:
    """The head word (soft-max, box) right before the unexpected token, or None."""
    before = text[: err.token.start_pos]
    before = re.sub(r"#[^\n]*", "", before).rstrip(" \t\f\r\n,")
    for pattern, word in _HEADS:
        if re.search(pattern + "$", before, re.IGNORECASE) is not None:
            return word
    return None


def _syntax_error(err: UnexpectedInput, text: str) -> SpecError:
    if isinstance(err, UnexpectedEOF) or (
        isinstance(err, UnexpectedToken) and err.token.type == "$END"
    ):
        lines = text.rstrip().split("\n")
        line = len(lines)
        column = len(lines[-1].rstrip("\r")) + 1
        loc = Loc(line, column, line, column + 1)
        return SpecError(
            "the spec ends too early", loc, expected=_expected(err.expected, text, len(text))
        )
    if isinstance(err, UnexpectedToken):
        token = err.token
        if head := _after_head(err, text):
            return SpecError(f"{str(token)!r} after {head}: {head} ends the net", _loc(token))
        word = _word_at(text, token.start_pos)
        if len(word) > len(str(token)):  # a known token glued to more text: one unknown word
            loc = Loc(token.line, token.column, token.line, token.column + len(word))
            expected = _expected(err.expected, text, token.start_pos)
            return SpecError(f"unknown word {word!r}", loc, expected=expected)
        return SpecError(
            f"unexpected {str(token)!r}",
            _loc(token),
            expected=_expected(err.expected, text, token.start_pos),
        )
    assert isinstance(err, UnexpectedCharacters)
    word = _word_at(text, err.pos_in_stream)
    loc = Loc(err.line, err.column, err.line, err.column + len(word))
    expected = _expected(err.allowed or set(), text, err.pos_in_stream)
    return SpecError(f"unknown word {word!r}", loc, expected=expected)


def _word_at(text: str, pos: int) -> str:
    word = re.match(r"[^\s,#]*", text[pos:]).group(0) or text[pos]
    return word if len(word) <= 40 else word[:40] + "…"


def parse(text: str, filename: str | None = None) -> Spec:
    """Parse spec text; any mistake raises SpecError pointing at the text."""
    try:
        if not text.strip(" \t\f\r\n,") or all(
            line.strip(" \t\f\r,").startswith("#") or not line.strip(" \t\f\r,")
            for line in text.split("\n")
        ):
            raise SpecError("the spec is empty: it has no layers")
        try:
            tree = _parser().parse(text)
        except UnexpectedInput as err:
            raise _syntax_error(err, text) from None
        spec_input = Input()
        layers = []
        for child in tree.children:
            if child.data == "input":
                spec_input = _input(child)
            else:
                layers.append(_layer(child))
        if (wrong := misplaced(layers)) is not None:
            index, why = wrong
            raise SpecError(why, layers[index].loc)
        return Spec(tuple(layers), spec_input, _description(text), text, filename)
    except SpecError as err:
        raise err.with_source(text, filename) from None
