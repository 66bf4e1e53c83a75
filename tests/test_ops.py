"""The op registry: an op is one class in one module under compiler/ir/ops/, which the rest of
the code only asks (for behaviour, or for a trait), never switches on."""

import ast
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from vggspec.compiler import compile_spec, format_graph, format_spec, parse
from vggspec.compiler.frontend.ast import EndsNet, Spec
from vggspec.compiler.frontend.words import WORDS, register, rule
from vggspec.compiler.ir import ops
from vggspec.compiler.ir.graph import meta
from vggspec.compiler.ir.ops.base import Op
from vggspec.compiler.ir.ops.traits import Head
from vggspec.compiler.lowering.launches import graph_launches
from vggspec.compiler.lowering.net import build

ROOT = Path(__file__).resolve().parents[1]
# Where the ops are asked, never switched on: all of the compiler but the ops package, all
# of the runtime and the command line.
ASKING = [
    p
    for folder in ("compiler", "runtime", "vggspec")
    for p in sorted((ROOT / folder).rglob("*.py"))
    if "ops" not in p.relative_to(ROOT).parts
]


def _op_classes() -> list[type]:
    """Every op class of compiler/ir/ops/ and every class they are built from (bases and
    traits), but `object`."""
    assert ops.__name__  # the package imported every op module
    found, todo = set(), [Op]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith(ops.__name__) and cls not in found:
            found.add(cls)
            todo += cls.__subclasses__()
    return sorted({k for cls in found for k in cls.__mro__ if k is not object}, key=str)


def _op_class_names() -> set[str]:
    """The op classes a type switch would name (not the bases every op has, nor traits,
    which are asked for with op.trait())."""
    return {
        cls.__name__
        for cls in _op_classes()
        if issubclass(cls, Op) and cls is not Op and cls.__module__.startswith(ops.__name__)
    }


def _op_properties() -> set[str]:
    """What an op class holds that is not behaviour nor per-instance data: its class-level
    values (flags, strings, tuples) and properties, on the class and every base and trait.
    A caller that tests one of these is switching on what kind of op it has."""
    names = set()
    for cls in _op_classes():
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else ()
        for name, value in vars(cls).items():
            if name.startswith("__") or name in fields:
                continue
            if isinstance(value, property) or not (
                callable(value) or isinstance(value, (classmethod, staticmethod))
            ):
                names.add(name)
    return names


def _answer_fields() -> set[str]:
    """The string fields of the values the op API answers with (its methods' return types
    that the ops package defines: Modules.section): a caller that compares one, or branches
    on it, is switching on what kind of op gave it ("conv" if place.section == "features")."""
    names = set()
    for cls in _op_classes():
        for value in vars(cls).values():
            returns = getattr(value, "__annotations__", {}).get("return", "")
            for word in re.findall(r"[A-Za-z_]\w*", str(returns)):
                answer = vars(sys.modules[cls.__module__]).get(word)
                if (
                    isinstance(answer, type)
                    and answer.__module__.startswith(ops.__name__)
                    and dataclasses.is_dataclass(answer)
                    and not issubclass(answer, Op)
                ):
                    names |= {f.name for f in dataclasses.fields(answer) if f.type in ("str", str)}
    return names


def _type_checks(path: Path) -> list[str]:
    """isinstance/issubclass/type(...) tests in a file that name an op class."""
    names = _op_class_names()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "isinstance",
            "issubclass",
        ):
            checked = node.args[1]
        elif isinstance(node, ast.Compare) and getattr(
            getattr(node.left, "func", None), "id", ""
        ) == ("type"):
            checked = node.comparators[0]
        else:
            continue
        for sub in ast.walk(checked):
            name = getattr(sub, "id", None) or getattr(sub, "attr", None)
            if name in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def _tested(node: ast.AST, lookups: bool = True) -> list[ast.AST]:
    """The parts of `node` that decide something: conditions, compared values, operands of
    and/or/not, and with `lookups` subscripts (a table looked up by a value is a switch too)."""
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        return [node.test]
    if isinstance(node, ast.comprehension):
        return list(node.ifs)
    if isinstance(node, ast.Compare):
        return [node.left, *node.comparators]
    if isinstance(node, ast.BoolOp):
        return list(node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return [node.operand]
    if isinstance(node, ast.Match):
        return [node.subject]
    if isinstance(node, ast.Subscript) and lookups:
        return [node.slice]
    return []


def _property_switches(path: Path) -> list[str]:
    """Flag and string switches in a file on an op property (see _op_properties): a
    condition, comparison or lookup that reads one (but a class reading its own, `self.x`);
    and conditions or comparisons on a string an op answered with (see _answer_fields; a
    table keyed by one, as torchvision's per-list module counts, is no switch)."""
    found = set()
    tree = ast.parse(path.read_text())
    for names, lookups in ((_op_properties(), True), (_answer_fields(), False)):
        for node in ast.walk(tree):
            for part in _tested(node, lookups):
                for sub in ast.walk(part):
                    if (
                        isinstance(sub, ast.Attribute)
                        and sub.attr in names
                        and getattr(sub.value, "id", "") not in ("self", "cls")
                    ):
                        found.add(f"{path.relative_to(ROOT)}:{sub.lineno} {sub.attr}")
    return sorted(found)


def test_no_type_switches_on_ops_outside_the_ops_package():
    assert len(ASKING) > 60  # the glob found the compiler, the runtime and the command line
    assert ROOT / "runtime/eval/models.py" in ASKING and ROOT / "vggspec/cli.py" in ASKING
    assert {"Conv", "FullyConnected", "ReLU", "SoftMax", "Box"} <= _op_class_names()
    assert [hit for path in ASKING for hit in _type_checks(path)] == []


def test_no_flag_or_string_switches_on_op_properties_outside_the_ops_package():
    names = _op_properties()
    assert {"word", "pattern", "absorbs", "absorbed_as", "pooling"} <= names
    assert not {"relu", "kernel", "describe", "trait"} & names  # data and behaviour are not
    assert "section" in _answer_fields()
    assert [hit for path in ASKING for hit in _property_switches(path)] == []


@pytest.mark.parametrize(
    "planted, found",
    [
        ("if isinstance(o, Conv): pass\n", "_type_checks"),
        ("kind = 'conv' if op(g, n).word == 'conv' else 'fc'\n", "_property_switches"),
        ("while not layer.absorbs:\n    pass\n", "_property_switches"),
        ("index = position[operation.pattern]\n", "_property_switches"),
        (
            "kind = 'conv' if op.torchvision().section == 'features' else 'fc'\n",
            "_property_switches",
        ),
        ("if place.section != wanted:\n    pass\n", "_property_switches"),
    ],
)
def test_the_switch_finders_find_one(planted, found):
    sample = ROOT / "tests" / "test_ops.py"
    assert _type_checks(sample) == [] and _property_switches(sample) == []
    probe = Path(__file__).with_name("_probe_switch.py")
    probe.write_text(planted)
    try:
        hits = globals()[found](probe)
        assert len(hits) == 1 and hits[0].startswith("tests/_probe_switch.py:")
    finally:
        probe.unlink()


def test_the_grammar_file_names_no_word_the_registry_gives_them():
    grammar = (ROOT / "compiler/frontend/vgg.lark").read_text()
    rules = [line.split(":")[0] for line in grammar.splitlines() if re.match(r"\??[a-z]+:", line)]
    assert rules == ["start", "input"]  # the words' rules come from the registry
    # (a new op module adds its own: the words below are there, each under its rule)
    assert {name: cls.word for name, cls in WORDS.items()}.items() >= {
        "conv": "conv",
        "maxpool": "maxpool",
        "avgpool": "avgpool",
        "gap": "gap",
        "lrn": "LRN",
        "fc": "FC",
        "bn": "BN",
        "softmax": "soft-max",
        "box": "box",
    }.items()


# A test-only op, written as an op module would be: one class, its word and its IR op.
@dataclass(frozen=True)
class Twice(Op):
    word = "twice"

    def build(self, b) -> None:
        b.add(f"twice{b.namer.stage}_{b.namer.next('twice')}", self)

    def describe(self) -> str:
        return "double"

    def forward(self, x, run):
        return 2 * x


@dataclass(frozen=True)
class Widened(Twice):
    """Twice with a `features` count: an attribute that does not make it the classifier."""

    features: int = 3


def test_same_network_finds_the_classifier_by_the_layer_api():
    from vggspec.runtime.eval.models import same_network

    base = parse("input 8x8 RGB\nconv3-4 maxpool\nFC-5 soft-max\n")
    *body, fc, softmax = base.layers
    a = Spec((*body, fc, Widened(), softmax), base.input)
    b = Spec((*body, fc.resized(7), Widened(), softmax), base.input)
    assert same_network(a, b) and same_network(b, a)  # they differ in the class count only
    c = Spec((*body, fc.resized(7), Widened(features=4), softmax), base.input)
    assert not same_network(a, c)
    assert same_network(base, parse("input 8x8 RGB\nconv3-4 maxpool\nFC-9 soft-max\n"))
    assert not same_network(base, parse("input 8x8 RGB\nconv3-8 maxpool\nFC-5 soft-max\n"))


@pytest.fixture
def twice():
    register(Twice)
    yield Twice
    del WORDS[rule(Twice)]


def test_a_new_op_needs_no_edit_outside_its_module(twice):
    base = parse("input 8x8 RGB\nconv3-4 maxpool\nFC-5 soft-max\n")
    layers = (base.layers[0], twice(), base.layers[1], *base.layers[2:])
    spec = Spec(layers, base.input)
    assert format_spec(spec).splitlines()[1] == "conv3-4 twice maxpool"
    assert parse(format_spec(spec)) == spec  # the grammar has the word: nothing else edited
    g = compile_spec(spec)
    assert "%twice1_1 = double(%conv1_1)  # [4, 8, 8]" in format_graph(g)
    assert meta(g, "twice1_1").params == 0 and meta(g, "pool1").shape == (4, 4, 4)
    _, fallbacks = graph_launches(g, 2)
    assert fallbacks == ["twice1_1 (double)"]
    torch.manual_seed(0)
    net = build(spec, "torch").eval()
    torch.manual_seed(0)
    plain = build(base, "torch").eval()
    x = torch.randn(2, 3, 8, 8)
    # conv → ReLU → ×2 → pool → FC: the FC sees twice the input, its bias unchanged.
    b = plain.fc2.bias
    assert torch.equal(net.fc2.weight, plain.fc2.weight)  # same draws, same order
    expected = (plain(x) - b) * 2 + b
    assert torch.allclose(net(x), expected, atol=1e-6)
    assert [name for name, _ in net.layers()] == ["conv1_1", "twice1_1", "pool1", "fc2"]


# A test-only head, as issue 14's would be: its own forward at prediction and its own loss.
@dataclass(frozen=True)
class Halved(EndsNet, Head, Op):
    word = "halved"

    def build(self, b) -> None:
        b.add("halved", self)

    def describe(self) -> str:
        return "halved"

    def forward(self, x, run):
        return x / 2

    def loss(self, scores, target, backend):
        return ((scores - target) ** 2).mean()


def test_a_new_head_owns_its_prediction_and_its_loss():
    base = parse("input 8x8 RGB\nconv3-4 maxpool\nFC-5\n")
    torch.manual_seed(0)
    net = build(Spec((*base.layers, Halved()), base.input), "torch").eval()
    assert [n for n, _ in net.head()] == ["halved"]
    x, target = torch.randn(2, 3, 8, 8), torch.randn(2, 5)
    scores = net(x)
    assert torch.equal(net.predict(x), scores / 2)
    assert torch.equal(net.loss(scores, target), ((scores - target) ** 2).mean())
    # the paper's head, and a spec without one, predict and train with soft-max
    for text in ("FC-5 soft-max\n", "FC-5\n"):
        torch.manual_seed(0)
        plain = build(parse("input 8x8 RGB\nconv3-4 maxpool\n" + text), "torch").eval()
        scores, labels = plain(x), torch.tensor([1, 4])
        assert torch.equal(plain.predict(x), torch.softmax(scores, 1))
        assert torch.equal(
            plain.loss(scores, labels), torch.nn.functional.cross_entropy(scores, labels)
        )
