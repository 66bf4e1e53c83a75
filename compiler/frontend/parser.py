"""Text → Spec: the lark grammar in vgg.lark, with errors that point at the text."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .ast import EndsNet, Input, Layer, Loc, Spec, misplaced
from .errors import SpecError
from .words import WORDS, number, rule, terminal, token_pattern

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


def _words_grammar(words: tuple[type[Layer], ...]) -> str:
    """The rules and terminals of the words: `layer` and `head` (the words that end the net)
    as alternatives, then one rule and one terminal per word."""
    layers = [rule(cls) for cls in words if not issubclass(cls, EndsNet)]
    heads = [rule(cls) for cls in words if issubclass(cls, EndsNet)]
    lines = [f"?layer: {' | '.join(layers)}", f"?head: {' | '.join(heads)}"]
    for cls in words:
        pattern = token_pattern(cls).replace("/", "\\/")
        lines += [f"{rule(cls)}: {terminal(cls)}", f"{terminal(cls)}: /{pattern}/i"]
    return "\n".join(lines) + "\n"


@cache
def _lark(words: tuple[type[Layer], ...]) -> Lark:
    grammar = Path(__file__).with_name("vgg.lark").read_text(encoding="utf-8")
    return Lark(
        grammar + _words_grammar(words),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def _parser() -> Lark:
    """The parser of the words registered now (a word registered later gets a new one)."""
    return _lark(tuple(WORDS.values()))


def _loc(token: Token) -> Loc:
    return Loc(token.line, token.column, token.end_line, token.end_column)


def _number(digits: str, what: str, token: Token) -> int:
    return number(digits, what, _loc(token))


def _layer(tree: Tree):
    token = tree.children[0]
    loc = _loc(token)
    try:
        return WORDS[tree.data].read(str(token), loc)
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


def _word_class(word: str) -> type[Layer] | None:
    """The class of the word that `word` (a token as written) spells, or None."""
    for cls in WORDS.values():
        if re.fullmatch(token_pattern(cls), word, re.IGNORECASE):
            return cls
    return None


def _expected(names, text: str = "", pos: int = 0) -> str:
    """How the terminals `names` read; a word that may not follow the word before `pos`
    (box after anything but an FC layer) is left out."""
    by_terminal = {terminal(cls): cls for cls in WORDS.values()}
    before = [w for w in re.split(r"[ \t\f\r\n,]+", re.sub(r"#[^\n]*", "", text[:pos])) if w]
    previous = _word_class(before[-1]) if before else None
    words = {
        by_terminal[name].expected if name in by_terminal else _EXPECTED_WORDS.get(name, name)
        for name in names
        if name not in by_terminal or by_terminal[name].may_follow(previous)
    }
    return ", ".join(sorted(words))


def _after_head(err: UnexpectedToken, text: str) -> str | None:
    """The word that ends the net (soft-max, box) right before the unexpected token, as
    an error names it, or None."""
    before = text[: err.token.start_pos]
    before = re.sub(r"#[^\n]*", "", before).rstrip(" \t\f\r\n,")
    for cls in WORDS.values():
        pattern = f"(?<![A-Za-z0-9_\\-])(?:{cls.pattern})$"
        if issubclass(cls, EndsNet) and re.search(pattern, before, re.IGNORECASE) is not None:
            return cls.word
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
