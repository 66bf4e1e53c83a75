"""Every backend runs every spec: forward and backward of each spec in specs/ (at toy size) and
of the test-only ops, through torch, triton (interpreter) and auto (its own logic on the CPU,
with a stand-in timer), each against the torch backend with the same weights and draws."""

from __future__ import annotations

import pytest
import torch
from test_ops import Halved, Twice
from vggspec.compiler import Spec, parse
from vggspec.compiler.frontend.ast import EndsNet
from vggspec.compiler.frontend.words import WORDS
from vggspec.compiler.lowering import backends
from vggspec.compiler.lowering.autotune import Autotuner, stand_in_timer
from vggspec.compiler.lowering.autotune_cache import DecisionCache
from vggspec.compiler.lowering.backends import auto

from bench.spec_conformance import run_net, twin_nets, worst_error
from bench.toy_specs import toy_specs

TOLERANCE = 1e-4  # fp32: the interpreter's kernels against torch's (max|a-b| / max|b|)
# A spec of ops no spec file uses (average pooling, global average pooling), and one with
# the test-only element-wise op of tests/test_ops.py.
_BASE = parse("input 16x16 RGB\nconv3-4 maxpool\nFC-6 FC-5 soft-max\n")
EXTRA = {
    "avgpool-gap": parse("input 16x16 RGB\nconv3-4 avgpool conv3-8 BN gap\nFC-6 FC-5 soft-max\n"),
    "twice": Spec((_BASE.layers[0], Twice(), *_BASE.layers[1:]), _BASE.input),
}


def _spec_with(word: type) -> Spec | None:
    """_BASE with the registered `word` built from its defaults: a head in soft-max's place,
    any other word after the conv; None for a word that needs values or cannot stand there."""
    try:
        layer = word()
    except TypeError:
        return None
    body = _BASE.layers
    layers = (*body[:-1], layer) if layer.trait(EndsNet) else (body[0], layer, *body[1:])
    try:
        return Spec(layers, _BASE.input)
    except ValueError:
        return None


SPECS = {**toy_specs(), **EXTRA}
# Every registered word that no spec above uses gets a spec of its own (found by
# enumeration: a new op module is run through every backend without an edit here).
_USED = {type(layer) for spec in SPECS.values() for layer in spec.layers}
for _word in WORDS.values():
    if _word not in _USED and (_spec := _spec_with(_word)) is not None:
        EXTRA[f"{_word.word}-alone"] = SPECS[f"{_word.word}-alone"] = _spec
# The default tier runs every spec through torch; through auto A, A-BN, A-LRN, D-loc, the
# demo nets and the extras (every op; B to E repeat A's layers), and through triton the
# demo nets, A-LRN and the extras (auto runs the Triton side of every call in its trials,
# then chooses it). The rest is the slow tier's (make test-slow).
AUTO_DEFAULT = {"A.vgg", "A-BN.vgg", "A-LRN.vgg", "D-loc.vgg", "demo.vgg", "demo-loc.vgg"}
AUTO_DEFAULT |= set(EXTRA)
TRITON_DEFAULT = {"demo.vgg", "demo-loc.vgg", "A-LRN.vgg", *EXTRA}


@pytest.fixture(scope="module")
def tuner(tmp_path_factory):
    """One tuner for the module: the specs share many call signatures, measured once."""
    path = tmp_path_factory.mktemp("auto") / "autotune.json"
    return Autotuner(DecisionCache(path), stand_in_timer("triton"))


def _backend(name, tuner):
    return auto.Backend(tuner) if name == "auto" else name


def _cases():
    for name in sorted(SPECS):
        for backend in ("torch", "triton", "auto"):
            default = {"torch": SPECS, "auto": AUTO_DEFAULT, "triton": TRITON_DEFAULT}
            slow = name not in default[backend]
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, backend, marks=marks, id=f"{name}-{backend}")


@pytest.mark.parametrize("name, backend", list(_cases()))
def test_every_spec_through_every_backend(name, backend, tuner, one_thread):
    reference, net = twin_nets(SPECS[name], _backend(backend, tuner), "cpu")
    measured = tuner.measured
    error, where = worst_error(run_net(net, "cpu"), run_net(reference, "cpu"))
    assert error <= TOLERANCE, f"{name} on {backend}: {where} off by {error:.2e}"
    if backend == "auto":
        # Every call was decided (measured now or by an earlier spec), for triton.
        assert tuner.measured >= measured and set(tuner.chosen.values()) == {"triton"}


def test_a_test_only_head_through_every_backend(tuner, one_thread):
    """The head of tests/test_ops.py (its own prediction and loss) on every backend."""
    spec = Spec((*_BASE.layers[:-1], Halved()), _BASE.input)
    target = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    results = {}
    for backend in ("torch", "triton", "auto"):
        _, net = twin_nets(spec, _backend(backend, tuner), "cpu")
        scores = net(x)
        loss = net.loss(scores, target)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        results[backend] = {
            "loss": loss.detach(),
            "predict": net.eval().predict(x).detach(),
            **{f"d {i}": g for i, g in enumerate(grads)},
        }
    for backend in ("triton", "auto"):
        error, where = worst_error(results[backend], results["torch"])
        assert error <= TOLERANCE, f"{backend}: {where} off by {error:.2e}"


@pytest.mark.parametrize("name", backends.names())
def test_every_backend_inherits_the_torch_backend(name):
    """An op a backend does not accelerate runs through torch, never AttributeError."""
    reference = backends.backend_class("torch")
    cls = backends.backend_class(name)
    assert issubclass(cls, reference)
    methods = {m for m, v in vars(reference).items() if callable(v) and not m.startswith("_")}
    assert {"batch_norm", "avg_pool", "lrn", "dropout", "relu"} <= methods


def test_the_specs_use_every_op_of_the_notation():
    """The spec files and the extra specs above exercise every registered layer."""
    used = {type(layer) for spec in SPECS.values() for layer in spec.layers}
    assert set(WORDS.values()) <= used and Twice in used
    assert len(toy_specs()) == 13  # A, A-LRN, B, C, D, E, four -BN, demo, demo-loc, D-loc


def test_the_stand_in_runs_auto_without_cuda(monkeypatch, tmp_path):
    """VGGSPEC_AUTO_STAND_IN: `auto` is itself on the CPU, its timer the stand-in."""
    if torch.cuda.is_available():
        pytest.skip("auto is itself on CUDA anyway")
    from vggspec.compiler.lowering import autotune

    assert backends.resolve("auto") == "torch"
    monkeypatch.setenv("VGGSPEC_AUTO_STAND_IN", "torch")
    monkeypatch.setenv("VGGSPEC_AUTOTUNE_CACHE", str(tmp_path / "at.json"))
    monkeypatch.setattr(autotune, "_DEFAULT", None)
    assert backends.resolve("auto") == "auto"
    net = twin_nets(SPECS["twice"], "auto", "cpu")[1]
    assert net.backend_name == "auto"
    net(torch.randn(2, 3, 16, 16))
    assert set(net.backend.tuner.chosen.values()) == {"torch"}
    monkeypatch.setenv("VGGSPEC_AUTO_STAND_IN", "cuda")
    with pytest.raises(Exception, match="choose triton or torch"):
        backends.resolve("auto")
