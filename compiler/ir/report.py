"""Readable forms of a compiled graph: the per-layer table, JSON and graphviz dot."""

from __future__ import annotations

from ..table import text_table
from .graph import Graph, launch_count, meta, nodes, op, output, score_map_size


def _field(pair) -> int | list[int]:
    # Square fields (every Table 1 net at a square input) read as one number.
    return pair[0] if pair[0] == pair[1] else list(pair)


def _human(value: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


def format_bytes(value: int) -> str:
    for scale, prefix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}"
    return f"{value} B"


def to_dict(g: Graph) -> dict:
    """The machine-readable compile report (`vggspec compile --json`)."""
    totals = g.graph["totals"]
    data = meta(g, nodes(g)[0])
    result = {
        "name": g.graph.get("name", "spec"),
        "input": list(data.shape),
        "params": totals.params,
        "macs": totals.macs,
        "flops": totals.flops,
        "receptive_field": _field(meta(g, output(g)).rf),
        "batch": totals.batch,
        "dtype": totals.dtype,
        "param_bytes": totals.param_bytes,
        "forward_activation_bytes": totals.forward_bytes,
        "training_activation_bytes": totals.training_bytes,
        "launches": launch_count(g),
        "passes": list(g.graph["passes"]),
        "layers": [],
    }
    for n in nodes(g):
        info = meta(g, n)
        loc = info.loc
        result["layers"].append(
            {
                "name": n,
                "op": op(g, n).describe(),
                "shape": list(info.shape),
                "params": info.params,
                "macs": info.macs,
                "flops": info.flops,
                "receptive_field": _field(info.rf),
                "jump": _field(info.jump),
                "activation_bytes": info.out_bytes,
                "line": loc.line if loc else None,
                "column": loc.column if loc else None,
            }
        )
    if totals.buffers:
        result["buffers"] = totals.buffers
        result["buffer_bytes"] = totals.buffer_bytes
        result["elementwise"] = totals.elementwise
    if (size := score_map_size(g)) is not None:
        result["score_map"] = list(size)
    return result


def format_table(g: Graph) -> str:
    """The per-layer table and totals that `vggspec compile` prints."""
    report = to_dict(g)
    header = ("layer", "op", "output", "params", "MACs", "RF")
    rows = []
    for layer in report["layers"]:
        rf = layer["receptive_field"]
        rows.append(
            (
                layer["name"],
                layer["op"],
                "x".join(map(str, layer["shape"])),
                f"{layer['params']:,}" if layer["params"] else "-",
                f"{layer['macs']:,}" if layer["macs"] else "-",
                str(rf) if isinstance(rf, int) else "x".join(map(str, rf)),
            )
        )
    out = [f"{report['name']}: {' → '.join(g.graph['passes'])}"]
    out += text_table(header, rows, right=(3, 4, 5))
    b, dtype = report["batch"], report["dtype"]
    rf = report["receptive_field"]
    out += [
        "",
        f"parameters        {report['params']:,} ({_human(report['params'])})",
        f"MACs              {report['macs']:,} ({_human(report['macs'])}MAC per image)",
        f"FLOPs (2 x MACs)  {report['flops']:,} ({_human(report['flops'])}FLOP per image)",
    ]
    if "elementwise" in report:
        e = report["elementwise"]
        out.append(f"BN element-wise   {e:,} ({_human(e)}op per image, not in MACs)")
    if "buffers" in report:
        out.append(
            f"buffers           {report['buffers']:,} (BN running statistics, not parameters)"
        )
    included = ""
    if "buffers" in report:
        included = f", buffers included: {format_bytes(report['buffer_bytes'])}"
    out += [
        f"param memory      {format_bytes(report['param_bytes'])} ({dtype}{included})",
        f"activations       {format_bytes(report['forward_activation_bytes'])} forward peak, "
        f"{format_bytes(report['training_activation_bytes'])} kept for backward "
        f"(batch {b}, {dtype})",
        f"receptive field   {rf if isinstance(rf, int) else 'x'.join(map(str, rf))} px "
        "(class scores)",
        f"kernel launches   {report['launches']}",
    ]
    if "score_map" in report:
        h, w = report["score_map"]
        out.append(f"class score map   {h}x{w} at input {report['input'][1]}x{report['input'][2]}")
    return "\n".join(out) + "\n"


def format_dot(g: Graph) -> str:
    """Graphviz text; render with `dot -Tsvg`."""
    lines = [f'digraph "{g.graph.get("name", "spec")}" {{', "  rankdir=TB;", "  node [shape=box];"]
    for n in nodes(g):
        shape = "x".join(map(str, meta(g, n).shape))
        lines.append(f'  "{n}" [label="{n}\\n{op(g, n).describe()}\\n{shape}"];')
    lines.extend(f'  "{a}" -> "{b}";' for a, b in g.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"
