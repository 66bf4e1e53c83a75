"""The evaluation's report: a table shaped like the paper's Tables 3–6, and its JSON form."""

from __future__ import annotations

from vggspec.compiler.table import text_table

from ..models import EvalModel
from .protocol import LABELS

HEADER = ("config", "train S", "test Q", "method", "top-1 err", "top-5 err")


def scales_text(scales: list[int]) -> str:
    return ",".join(map(str, scales))


def percent(value) -> str:
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
        tested = (
            " / ".join(scales_text(qs) for qs in per_net) if per_net else scales_text(r["scales"])
        )
        body.append(
            (
                config,
                train,
                tested,
                LABELS[r["method"]],
                percent(r["top1_error"]),
                percent(r.get("top5_error")),
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
