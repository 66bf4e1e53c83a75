"""Spec → canonical text: description, input line, then one stage per line."""

from __future__ import annotations

from .ast import Conv, FullyConnected, Input, Lrn, MaxPool, SoftMax, Spec


def format_input(spec_input: Input) -> str:
    return f"input {spec_input.height}x{spec_input.width} {spec_input.colour}"


def format_layer(layer) -> str:
    if isinstance(layer, Conv):
        return f"conv{layer.kernel}-{layer.channels}"
    if isinstance(layer, FullyConnected):
        return f"FC-{layer.features}"
    return {MaxPool: "maxpool", Lrn: "LRN", SoftMax: "soft-max"}[type(layer)]


def format_spec(spec: Spec) -> str:
    """Canonical text of a spec; `parse(format_spec(s)) == s` for every spec."""
    lines = [f"# {line}" if line else "#" for line in spec.description]
    lines.append(format_input(spec.input))
    stage: list[str] = []
    for layer in spec.layers:
        stage.append(format_layer(layer))
        if isinstance(layer, MaxPool):  # Table 1 reads one stage per row, ending at a pool
            lines.append(" ".join(stage))
            stage = []
    if stage:
        lines.append(" ".join(stage))
    return "\n".join(lines) + "\n"
