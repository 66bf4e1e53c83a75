"""The localisation report: a table of the protocols' errors (Tables 8–9), and its JSON form."""

from __future__ import annotations

from vggspec.compiler.table import text_table

from ..classify.report import net_entry, percent, scales_text
from ..models import EvalModel

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
            scales_text(r["scales"]),
            PROTOCOL_LABELS[r["protocol"]],
            percent(r["loc_error"]),
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
        parts.append(
            f"top-5 classes from {c['name']} ({c['source']}) at Q = {scales_text(c['scales'])}"
        )
    return ", ".join(parts)
