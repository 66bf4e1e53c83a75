"""The gpu-check report: Markdown tables of bench/gpu_check.py's results, and the issue's goals."""

from __future__ import annotations


def goals(result: dict) -> list[tuple[str, str, bool]]:
    """The issue's goals, each with what was measured and whether it holds."""
    rows = []
    if result.get("kernels"):
        bad = sum(not r["ok"] for r in result["kernels"])
        rows.append(("every Triton kernel correct", f"{bad} failing", bad == 0))
    if result.get("specs"):
        bad = [r["spec"] for r in result["specs"] if not r["ok"]]
        rows.append(("every spec runs through auto", ", ".join(bad) or "all ok", not bad))
    fwd = [r for r in result.get("layers", []) if r["kernel"] == "fwd" and r["dtype"] == "bf16"]
    if fwd:
        worst = min(r["speed_vs_cudnn"] for r in fwd)
        rows.append(
            ("Triton fwd ≥ 1.0× cuDNN+ReLU, every layer, bf16", f"worst {worst:.2f}×", worst >= 1.0)
        )
    steps = result.get("step", [])
    torch_rate = {r["batch"]: r["images_per_s"] for r in steps if r["backend"] == "torch"}
    for r in steps:
        if r["backend"] == "auto" and r["batch"] in torch_rate:
            b = r["batch"]
            vs = r["images_per_s"] / torch_rate[b]
            rows.append((f"auto step ≥ 1.0× torch, batch {b}", f"{vs:.2f}×", vs >= 1.0))
            rows.append(
                (
                    f"auto step ≥ 50 % of the bf16 roofline, batch {b}",
                    f"{r['fraction_of_roofline']:.1%} ({r['images_per_s']:.0f} images/s)",
                    r["fraction_of_roofline"] >= 0.5,
                )
            )
    return rows


def _table(title: str, head: str) -> list[str]:
    columns = head.count("|") - 1
    return [title, "", head, "|" + "---|" * columns]


def _gib(v):
    return "-" if v is None else f"{v:.1f}"


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    """The report as Markdown tables."""
    env = result["environment"]
    out = [
        f"# gpu-check: {env['gpu']}, torch {env['torch']}, triton {env['triton']}, "
        f"{env['date']}{' (dry run)' if result['dry_run'] else ''}",
        "",
    ]
    if result.get("not_in_table"):
        out += [f"**{result['not_in_table']}.**", ""]
    if result.get("failures"):
        out += _table("## Failures (each in its own guard)", "| section | unit | config | error |")
        for r in result["failures"]:
            error = r["error"].replace("|", "\\|")
            out.append(f"| {r['section']} | {r['unit']} | {r['config']} | {error} |")
        out.append("")
    if "plan" in result:
        p = result["plan"]
        out += [
            "## Plan",
            "",
            f"{p['launches']} kernel launches compiled ahead of time for {p['target']} "
            f"({p['gpu']}): {p['unfit']} do not fit its shared memory or registers; "
            f"{p['units kept off']} units kept off the GPU ({p['file']}).",
            "",
        ]
    if result.get("skipped"):
        out += _table("## Not launched: they do not fit this GPU", "| section | unit | why |")
        for r in result["skipped"]:
            out.append(f"| {r['section']} | {r['unit']} | {r['why']} |")
        out.append("")
    if result.get("kernels"):
        rows = result["kernels"]
        out += _table(
            "## Kernels against torch",
            "| kernel | dtype | configs × shapes | worst error | tolerance | failures |",
        )
        groups: dict[tuple, list] = {}
        for r in rows:
            groups.setdefault((r["family"], r["dtype"]), []).append(r)
        for (family, dtype), rs in groups.items():
            bad = [f"{r['config']} {r['case']}" for r in rs if not r["ok"]]
            worst = max(r["error"] for r in rs)
            out.append(
                f"| {family} | {dtype} | {len(rs)} | {worst:.2e} | {rs[0]['tol']:.1e} | "
                f"{', '.join(bad) or 'none'} |"
            )
        out.append("")
    if result.get("layers"):
        out += _table(
            "## Conv layers: Triton against cuDNN (TFLOP/s)",
            "| layer | batch | dtype | pass | Triton | cuDNN | Triton speed / cuDNN"
            " | AOT roofline bound | AOT estimate | peak GiB |",
        )
        for r in result["layers"]:
            out.append(
                f"| {r['layer']} | {r['batch']} | {r['dtype']} | {r['kernel']} | "
                f"{r['triton_tflops']:.1f} | {r['cudnn_tflops']:.1f} | "
                f"{r['speed_vs_cudnn']:.2f} | {r['roofline_tflops']:.1f} | "
                f"{_num(r['estimate_tflops'], '.1f')} | {_gib(r['peak_gib'])} |"
            )
        out.append("")
    if result.get("step"):
        out += _table(
            "## Training step (bf16 autocast)",
            "| batch | backend | images/s | / torch | roofline bound images/s | estimate images/s"
            " | fraction of roofline | peak GiB |",
        )
        torch_rate = {
            r["batch"]: r["images_per_s"] for r in result["step"] if r["backend"] == "torch"
        }
        for r in result["step"]:
            vs = r["images_per_s"] / torch_rate[r["batch"]] if r["batch"] in torch_rate else None
            out.append(
                f"| {r['batch']} | {r['backend']} | {r['images_per_s']:.1f} | "
                f"{'-' if vs is None else f'{vs:.2f}'} | {r['roofline_images_per_s']:.0f} | "
                f"{_num(r['estimate_images_per_s'], '.0f')} | {r['fraction_of_roofline']:.1%} | "
                f"{_gib(r['peak_gib'])} |"
            )
        out.append("")
    if result.get("specs"):
        out += _table(
            "## Every spec through auto against torch (fp32, TF32 off)",
            "| spec | input | calls measured | worst error | tolerance | ok |",
        )
        for r in result["specs"]:
            out.append(
                f"| {r['spec']} | {r['input']} | {r['measured']} | {r['error']:.2e} ({r['worst']}) "
                f"| {r['tol']:.0e} | {'yes' if r['ok'] else 'no'} |"
            )
        out.append("")
    if result.get("dense"):
        out += _table(
            "## Dense evaluation (bf16 autocast)", "| backend | Q | batch | images/s | peak GiB |"
        )
        for r in result["dense"]:
            out.append(
                f"| {r['backend']} | {r['q']} | {r['batch']} | {r['images_per_s']:.1f} | "
                f"{_gib(r['peak_gib'])} |"
            )
        out.append("")
    out += _table("## Goals (issue 15)", "| goal | measured | met |") + [
        f"| {goal} | {measured} | {'yes' if met else 'no'} |"
        for goal, measured, met in goals(result)
    ]
    out.append("")
    if result.get("autotune"):
        choices = result["autotune"]
        won = sum(c == "triton" for c in choices.values())
        out += [f"auto chose triton for {won} of {len(choices)} call signatures.", ""]
    out.append(
        "Section times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items())
    )
    if result.get("running"):
        out.append(
            f"\nRunning {result['running']} when this was written: a report that still says so"
            " after the check ended stopped there (killed, or hung until killed)."
        )
    if result.get("interrupted"):
        out.append(f"\nInterrupted {result['interrupted']}: the units after it did not run.")
    if result.get("restarts"):
        out.append(f"\nRestarted {result['restarts']} time(s) after a lost CUDA context.")
    return "\n".join(out) + "\n"
