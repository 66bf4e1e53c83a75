"""The evaluation's report: a table shaped like the paper's Tables 3–6, and its JSON form."""

from __future__ import annotations

from vggspec.compiler.table import text_table

from ..models import EvalModel
from .protocol import LABELS

HEADER = ("config", "train S", "test Q", "method", "top-1 err", "top-5 err")


def _qs(scales: list[int]) -> str:
    return ",".join(map(str, scales))


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def table_lines(report: dict) -> list[str]:
    """The table, one row per result; fused nets are joined with " & " and their
    per-net figures with " / ", as in the paper's Table 6."""
    nets = report["nets"]
    config = " & ".join(n["name"] for n in nets)
    train = " / ".join(n["train_scale"] for n in nets)
    body = []
    for r in report["results"]:
        per_net = r.get("scales_per_net")
        tested = " / ".join(_qs(qs) for qs in per_net) if per_net else _qs(r["scales"])
        body.append(
            (
                config,
                train,
                tested,
                LABELS[r["method"]],
                _percent(r["top1_error"]),
                _percent(r.get("top5_error")),
            )
        )
    return text_table(HEADER, body, right=(4, 5))


def summary_line(report: dict) -> str:
    unreadable = report["unreadable"]
    seconds = report["seconds"]
    parts = [f"{report['images']} images"]
    if unreadable:
        parts[0] += f" ({unreadable} unreadable files left out)"
    parts.append(f"{report['processes']} process(es)")
    parts.append(f"{report['images_per_second']:.1f} images/s")
    methods = [m for m in ("dense", "multi-crop") if seconds.get(m)]
    timing = ", ".join(f"{m} {seconds[m]:.1f} s" for m in methods)
    return ", ".join(parts) + (f" ({timing} of compute per process)" if timing else "")


def net_entry(model: EvalModel) -> dict:
    return {
        "name": model.name,
        "source": model.source,
        "train_scale": model.train_scale_text(),
        "scales": sorted(model.scales),
        "input_size": list(model.input_size),
        "preprocessing": model.preprocessing.describe(),
        "engine": model.serving.label,
    }


LOC_HEADER = ("config", "regression", "train S", "test Q", "protocol", "loc err")
PROTOCOL_LABELS = {
    "centre": "central crop, GT class",  # protocol 1, Table 8
    "dense": "dense, top-5 classes",  # protocol 2, Table 9
}


def loc_net_entry(model: EvalModel) -> dict:
    return {**net_entry(model), "regression": "PCR" if model.per_class else "SCR"}


def loc_table_lines(report: dict) -> list[str]:
    """Localisation's table, shaped like Tables 8–9: fused nets joined with " & "."""
    nets = report["nets"]
    config = " & ".join(n["name"] for n in nets)
    regression = " & ".join(n["regression"] for n in nets)
    train = " / ".join(n["train_scale"] for n in nets)
    body = [
        (
            config,
            regression,
            train,
            _qs(r["scales"]),
            PROTOCOL_LABELS[r["protocol"]],
            _percent(r["loc_error"]),
        )
        for r in report["results"]
    ]
    return text_table(LOC_HEADER, body, right=(5,))


def loc_summary_line(report: dict) -> str:
    parts = [f"{report['images']} images with a box"]
    if report["without_box"]:
        parts.append(f"{report['without_box']} without one left out")
    if report["unreadable"]:
        parts.append(f"{report['unreadable']} unreadable left out")
    if report["classifier"] and any(r["protocol"] == "dense" for r in report["results"]):
        c = report["classifier"]
        parts.append(f"top-5 classes from {c['name']} ({c['source']}) at Q = {_qs(c['scales'])}")
    return ", ".join(parts)
