"""One command for a CUDA machine: kernels, layers, training step and dense evaluation, measured.

    python bench/gpu_check.py OUT [--spec specs/D.vgg] [--only kernels layers step dense]
    python bench/gpu_check.py OUT --dry-run     # the same code on the CPU, toy sizes

Writes OUT/gpu_check.json and OUT/gpu_check.md and prints the Markdown table:
  1. every kernel configuration against torch (the kernel tests' shapes, bf16 and TF32;
     tolerances in bench/gpu_sweep.py: bf16 1.5e-2, TF32 5e-3 of max|ref|, pooling exact);
  2. per conv layer of the spec (D) at batch 64, bf16 and TF32: Triton fwd/dgrad/wgrad
     TFLOP/s against cuDNN (torch conv2d + ReLU, channels-last, cudnn.benchmark), and the
     ahead-of-time report's roofline prediction beside each;
  3. the whole training step (bf16 autocast, SGD as in the paper) at batch 64 and 128:
     images/s of the triton, torch and auto backends, and the fraction of the bf16
     roofline (the AOT report's per-kernel roofline summed over the step);
  4. dense evaluation (the FC layers as convs) at Q = 384: images/s, both backends;
  and the peak GPU memory of each case. About 5-8 minutes on one H100/H200.

On a GPU machine with Python 3.12, torch >= 2.11 and triton >= 3.6 preinstalled and no
network, nothing needs installing: carry this tree and lark's wheel (pure Python, imported
straight from the .whl), and run from the tree's root

    PYTHONPATH=lark-1.3.1-py3-none-any.whl python3 bench/gpu_check.py /tmp/gpu-check

(bench/_tree.py maps vggspec.compiler / vggspec.runtime onto the tree's folders).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._tree import use_this_tree  # noqa: E402

use_this_tree(ROOT)

import os  # noqa: E402

import torch  # noqa: E402

# Without a GPU the kernels run in Triton's interpreter, chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vggspec.compiler import compile_spec, load_spec  # noqa: E402
from vggspec.compiler.kernels.aot import GPUS, kernel_plans, roofline_seconds  # noqa: E402
from vggspec.compiler.kernels.shapes import ConvLaunch  # noqa: E402
from vggspec.compiler.lowering.autotune import Autotuner, wall_clock_ms  # noqa: E402
from vggspec.compiler.lowering.autotune_cache import DecisionCache  # noqa: E402
from vggspec.compiler.lowering.backends import auto  # noqa: E402
from vggspec.compiler.lowering.launches import graph_launches  # noqa: E402
from vggspec.compiler.lowering.net import build, densify  # noqa: E402

from bench.gpu_report import markdown  # noqa: E402
from bench.gpu_sweep import sweep_cases  # noqa: E402
from bench.kernels import DTYPES, conv_cases  # noqa: E402

SECTIONS = ("kernels", "layers", "step", "dense")
# Toy net for --dry-run: every op kind D has, at 8×8.
TOY_SPEC = "input 8x8 RGB\nconv3-4 conv3-4 maxpool\nFC-8 FC-5 soft-max\n"


class Sizes:
    """What each section runs at: the real check, or toy sizes for --dry-run."""

    def __init__(self, dry: bool):
        self.dtypes = ("bf16",) if dry else ("bf16", "tf32")  # the sweep's
        self.layer_dtypes = ("bf16", "tf32")
        self.sweep_cases = 1 if dry else 2
        self.sweep_configs = 1 if dry else None  # all
        self.autotune_reps = 1 if dry else 5
        self.layer_batch = 1 if dry else 64
        self.layers = 2 if dry else None  # all
        self.step_batches = (2,) if dry else (64, 128)
        self.steps, self.warmup = (1, 0) if dry else (10, 3)
        self.dense_q, self.dense_batch = (12, 1) if dry else (384, 32)


def time_ms(fn, device: str) -> float:
    """Median milliseconds of `fn` (CUDA events, L2 flushed; one wall-clock run on the CPU)."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def roofline_target(device: str) -> str:
    """The AOT report's GPU: sm_90 (H100 peaks; an H200 has the same compute) or sm_80."""
    if device == "cuda" and torch.cuda.get_device_capability()[0] == 8:
        return "sm_80"
    return "sm_90"


def check_kernels(device: str, sizes: Sizes) -> list[dict]:
    rows = []
    for dtype in sizes.dtypes:
        rows += sweep_cases(device, dtype, sizes.sweep_cases, sizes.sweep_configs)
    return rows


def _predicted_seconds(layer: ConvLaunch, dtype: str, target: str) -> dict[str, float]:
    """The AOT roofline per training kernel of one layer (wgrad with its split-K sums)."""
    kdtype = "bf16" if dtype == "bf16" else "fp32"
    out = {"fwd": 0.0, "dgrad": 0.0, "wgrad": 0.0}
    for plan in kernel_plans(layer, kdtype, training=True):
        seconds, _ = roofline_seconds(plan, kdtype, GPUS[target])
        kind = {"conv_fwd": "fwd", "conv_dgrad": "dgrad"}.get(plan.kind, "wgrad")
        out[kind] += seconds
    return out


def check_layers(spec_path: Path, device: str, sizes: Sizes, target: str) -> list[dict]:
    graph = compile_spec(load_spec(spec_path))
    launches, _ = graph_launches(graph, sizes.layer_batch, training=True)
    layers = [x for x in launches if isinstance(x, ConvLaunch)][: sizes.layers]
    rows = []
    for dtype in sizes.layer_dtypes:
        for layer in layers:
            flops = 2 * layer.batch * layer.h * layer.w * layer.c_out * layer.c_in * 9
            predicted = _predicted_seconds(layer, dtype, target)
            for kernel, (ours, ref) in conv_cases(layer, DTYPES[dtype], device).items():
                if kernel == "dgrad" and not layer.input_grad:
                    continue
                reset_peak(device)
                t_ours, t_ref = time_ms(ours, device), time_ms(ref, device)
                rows.append(
                    {
                        "layer": layer.name,
                        "batch": layer.batch,
                        "dtype": dtype,
                        "kernel": kernel,
                        "triton_tflops": flops / t_ours / 1e9,
                        "cudnn_tflops": flops / t_ref / 1e9,
                        "speed_vs_cudnn": t_ref / t_ours,
                        "predicted_tflops": flops / predicted[kernel] / 1e12,
                        "peak_gib": peak_gib(device),
                    }
                )
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _net(spec_path: Path, backend: str, device: str, tuner: Autotuner):
    torch.manual_seed(0)
    net = build(load_spec(spec_path), "torch" if backend == "auto" else backend, name="check")
    if backend == "auto":
        net.backend = auto.Backend(tuner)
    return net.to(device)


def check_steps(spec_path: Path, device: str, sizes: Sizes, target: str, tuner) -> list[dict]:
    """Images/s of a bf16-autocast SGD step per backend, against the summed AOT roofline."""
    graph = compile_spec(load_spec(spec_path))
    rows = []
    for batch in sizes.step_batches:
        launches, _ = graph_launches(graph, batch, training=True)
        roofline_s = sum(
            roofline_seconds(plan, "bf16", GPUS[target])[0]
            for launch in launches
            for plan in kernel_plans(launch, "bf16", training=True)
        )
        for backend in ("torch", "triton", "auto"):
            net = _net(spec_path, backend, device, tuner).train()
            opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
            g = torch.Generator(device).manual_seed(0)
            x = torch.randn(batch, 3, *net.input_size, generator=g, device=device)
            y = torch.randint(0, net.num_classes, (batch,), generator=g, device=device)

            def step(net=net, opt=opt, x=x, y=y):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=torch.bfloat16):
                    loss = net.loss(net(x), y)
                loss.backward()
                opt.step()

            reset_peak(device)
            for _ in range(sizes.warmup):  # the auto backend measures in its first step
                step()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(sizes.steps):
                step()
            synchronize(device)
            seconds = (time.perf_counter() - start) / sizes.steps
            rows.append(
                {
                    "batch": batch,
                    "backend": backend,
                    "images_per_s": batch / seconds,
                    "roofline_images_per_s": batch / roofline_s,
                    "fraction_of_roofline": roofline_s / seconds,
                    "peak_gib": peak_gib(device),
                }
            )
            del net, opt
    torch_rate = {r["batch"]: r["images_per_s"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        r["vs_torch"] = r["images_per_s"] / torch_rate[r["batch"]]
    return rows


def check_dense(spec_path: Path, device: str, sizes: Sizes, tuner) -> list[dict]:
    """Images/s of the dense twin (FC layers as convs) at Q×Q under bf16 autocast."""
    rows = []
    q, batch = sizes.dense_q, sizes.dense_batch
    for backend in ("torch", "triton"):
        twin = densify(_net(spec_path, backend, device, tuner)).eval()
        x = torch.randn(batch, 3, q, q, device=device)

        def run(twin=twin, x=x):
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
                return twin.predict(x)

        reset_peak(device)
        run()
        ms = time_ms(run, device)
        rows.append(
            {
                "backend": backend,
                "q": q,
                "batch": batch,
                "images_per_s": batch / ms * 1e3,
                "peak_gib": peak_gib(device),
            }
        )
        del twin
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "D.vgg")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, toy sizes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        device, spec = "cpu", args.out / "toy.vgg"
        spec.write_text(TOY_SPEC)
    elif torch.cuda.is_available():
        device, spec = "cuda", args.spec
    else:
        print("bench/gpu_check.py: no CUDA device here (use --dry-run on the CPU).")
        return 2
    # cuDNN as a user would run it: autotuned algorithms, TF32 allowed for fp32.
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    sizes, target = Sizes(args.dry_run), roofline_target(device)
    tuner = Autotuner(DecisionCache(args.out / "autotune.json"), wall_clock_ms(sizes.autotune_reps))
    import triton

    result = {
        "dry_run": args.dry_run,
        "environment": {
            "gpu": torch.cuda.get_device_name()
            if device == "cuda"
            else platform.processor() or "cpu",
            "torch": torch.__version__,
            "triton": triton.__version__,
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "roofline_target": f"{target} ({GPUS[target].name} peaks)",
            "spec": str(spec),
        },
        "seconds": {},
    }
    checks = {
        "kernels": lambda: check_kernels(device, sizes),
        "layers": lambda: check_layers(spec, device, sizes, target),
        "step": lambda: check_steps(spec, device, sizes, target, tuner),
        "dense": lambda: check_dense(spec, device, sizes, tuner),
    }
    for name in SECTIONS:
        if name not in args.only:
            continue
        start = time.perf_counter()
        print(f"gpu-check: {name} …", flush=True)
        result[name] = checks[name]()
        result["seconds"][name] = time.perf_counter() - start
        _write(args.out, result, tuner)  # a section that crashes later keeps the ones before
    text = _write(args.out, result, tuner)
    print(text)
    failed = [r for r in result.get("kernels", []) if not r["ok"]]
    return 1 if failed else 0


def _write(out: Path, result: dict, tuner: Autotuner) -> str:
    result["autotune"] = dict(tuner.chosen)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out / "gpu_check.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
