"""Spec → canonical text: description, input line, then one stage per line."""

from __future__ import annotations

from .ast import EndsStage, Input, Layer, Spec


def format_input(spec_input: Input) -> str:
    return f"input {spec_input.height}x{spec_input.width} {spec_input.colour}"


def format_layer(layer: Layer) -> str:
    return layer.text()


def format_spec(spec: Spec) -> str:
    """Canonical text of a spec; `parse(format_spec(s)) == s` for every spec."""
    lines = [f"# {line}" if line else "#" for line in spec.description]
    lines.append(format_input(spec.input))
    stage: list[str] = []
    for layer in spec.layers:
        stage.append(format_layer(layer))
        if layer.trait(EndsStage):  # Table 1 reads one stage per row, ending at a pool
            lines.append(" ".join(stage))
            stage = []
    if stage:
        lines.append(" ".join(stage))
    return "\n".join(lines) + "\n"
