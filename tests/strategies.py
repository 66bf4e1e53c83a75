"""Hypothesis strategies: random ASTs, and random texts that spell a known AST."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st
from vggspec.compiler import BN, Box, Conv, FullyConnected, Input, Lrn, SoftMax, Spec
from vggspec.compiler.frontend.ast import EndsNet
from vggspec.compiler.frontend.words import WORDS
from vggspec.compiler.ir.ops.lrn import PAPER

description_lines = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\n"), max_size=30
).map(str.strip)


def _lrn_value(default: float, values):
    """The paper's value half the time (it prints as nothing), another value otherwise."""
    return st.one_of(st.just(default), values)


_positive = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
lrn_layers = st.builds(
    Lrn,
    size=_lrn_value(5, st.integers(0, 500).map(lambda i: 2 * i + 1)),
    alpha=_lrn_value(1e-4, _positive),
    beta=_lrn_value(0.75, _positive),
    k=_lrn_value(2.0, _positive.filter(lambda v: v > 0)),
)


def _built_from_defaults(cls) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
        if f.init
    )


# Every word of the registry that ends no net and needs no value (maxpool, gap, …): a new
# op module is drawn without an edit here. BN is drawn where it may stand (below).
plain_words = [
    cls
    for cls in WORDS.values()
    if not issubclass(cls, EndsNet) and cls not in (BN, Lrn) and _built_from_defaults(cls)
]

body_layers = st.one_of(
    st.builds(
        Conv, kernel=st.integers(0, 5).map(lambda i: 2 * i + 1), channels=st.integers(1, 4096)
    ),
    *[st.builds(cls) for cls in plain_words],
    st.one_of(st.builds(Lrn), lrn_layers),
    st.builds(FullyConnected, features=st.integers(1, 10_000)),
)

inputs = st.builds(
    Input,
    height=st.integers(1, 1024),
    width=st.integers(1, 1024),
    colour=st.sampled_from(["RGB", "gray"]),
)


@st.composite
def specs(draw) -> Spec:
    layers = []
    for layer in draw(st.lists(body_layers, min_size=1, max_size=25)):
        if layer.misplaced(layers[-1] if layers else None) is not None:
            continue  # a word that may not stand here (none of today's body words)
        layers.append(layer)
        if isinstance(layer, (Conv, FullyConnected)) and draw(st.booleans()):
            layers.append(BN())  # BN only where it may stand: right after a conv or FC
    head = draw(st.sampled_from([None, "soft-max", "box"]))
    if head == "soft-max":
        layers.append(SoftMax())
    elif head == "box":
        # a box head regresses from an FC layer of 4 (one box) or 4 × classes outputs
        layers.append(FullyConnected(4 * draw(st.integers(1, 2_500))))
        layers.append(Box())
    description = tuple(draw(st.lists(description_lines, max_size=4)))
    return Spec(tuple(layers), draw(inputs), description)


_comment_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\n"), max_size=15
)


@st.composite
def separators(draw, required: bool = True) -> str:
    """A mix of whitespace, commas, newlines (LF or CRLF) and comments."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from([" ", "  ", "\t", ",", ", ", "\n", "\r\n", " ,\n"]),
                _comment_text.map(lambda t: f"#{t}\n"),
            ),
            min_size=1 if required else 0,
            max_size=4,
        )
    )
    text = "".join(pieces)
    if required and not any(c in text for c in " \t,\n"):
        text += " "
    return text


@st.composite
def _lrn_parameters(draw, layer: Lrn) -> str:
    """`(name=value,...)` naming every parameter that differs from the paper's and any
    others, in any order and case, numbers in any spelling that reads back the same."""
    names = [n for n, v in layer.parameters().items() if v != PAPER[n]]
    names += [n for n in PAPER if n not in names and draw(st.booleans())]
    if not names:
        return ""
    names = draw(st.permutations(names))
    items = []
    for name in names:
        value = layer.parameters()[name]
        text = (
            str(value)
            if name == "size"
            else draw(st.sampled_from([repr(value), f"{value:.17g}", f"{value:.17e}"]))
        )
        items.append(f"{_case(draw, name)}{draw(st.sampled_from(['=', ' = ']))}{text}")
    return "(" + draw(st.sampled_from([",", ", "])).join(items) + ")"


def _case(draw, word: str) -> str:
    return draw(st.sampled_from([word, word.lower(), word.upper()]))


@st.composite
def spelled_specs(draw) -> tuple[Spec, str]:
    """A spec and a text that spells it in any of the accepted ways."""
    spec = draw(specs())
    out = []
    for line in spec.description:
        out.append("#" + draw(st.sampled_from(["", " ", "  "])) + line)
        out.append(draw(st.sampled_from(["\n", "\r\n", "\n\n"])))
    i = spec.input
    default = i == Input()
    if not default or draw(st.booleans()):
        times = draw(st.sampled_from(["x", "X", "×", " x ", " × "]))
        colour = _case(
            draw, i.colour if i.colour == "RGB" else draw(st.sampled_from(["gray", "grey"]))
        )
        if draw(st.booleans()):
            out.append(f"input ({i.height}{times}{i.width} {colour} image)")
        else:
            out.append(f"{_case(draw, 'input')} {i.height}{times}{i.width} {colour}")
        out.append(draw(separators()))
    for layer in spec.layers:
        if isinstance(layer, Conv):
            kernel = "" if layer.kernel == 3 and draw(st.booleans()) else str(layer.kernel)
            word = f"{_case(draw, 'conv')}{kernel}-{layer.channels}"
        elif isinstance(layer, FullyConnected):
            word = f"{_case(draw, 'FC')}-{layer.features}"
        elif isinstance(layer, Lrn):
            word = _case(draw, "LRN") + draw(_lrn_parameters(layer))
        elif isinstance(layer, SoftMax):
            word = _case(draw, draw(st.sampled_from(["soft-max", "softmax"])))
        else:  # a word without values (maxpool, BN, box, …): its text, in any case
            word = _case(draw, layer.text())
        out.append(word)
        out.append(draw(separators()))
    return spec, "".join(out)
