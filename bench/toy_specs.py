"""Every spec of specs/ at toy size (its layers, narrower and 32×32) for CPU runs and dry runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vggspec.compiler import Input, Spec, load_spec
from vggspec.compiler.lowering.net import with_num_classes

SPECS = Path(__file__).resolve().parent.parent / "specs"
# Five 2×2 pools (the paper's nets) leave 1×1 of a 32×32 image.
TOY_SIDE = 32
TOY_CLASSES = 5


def spec_files() -> list[Path]:
    """Every network of specs/ (A … E, A-LRN, the -BN nets, the demo nets, D-loc)."""
    return sorted(SPECS.glob("*.vgg"))


def toy_spec(spec: Spec, side: int = TOY_SIDE, classes: int = TOY_CLASSES) -> Spec:
    """The same layers in the same order at side×side, conv widths divided by 16 (at least
    4), hidden FC layers 16 wide and the classifier sized for `classes` (a per-class box
    head: 4 × classes)."""
    layers = []
    for layer in spec.layers:
        names = {f.name for f in dataclasses.fields(layer)}
        if "channels" in names:
            layer = dataclasses.replace(layer, channels=max(4, layer.channels // 16))
        elif "features" in names:
            layer = dataclasses.replace(layer, features=16)
        layers.append(layer)
    small = Spec(tuple(layers), Input(side, side, spec.input.colour), spec.description)
    return with_num_classes(small, classes)


def toy_specs() -> dict[str, Spec]:
    """File name → toy spec, for every spec file."""
    return {path.name: toy_spec(load_spec(path)) for path in spec_files()}
