"""Dense against multi-crop evaluation (Sect. 3.2: "less efficient as it requires network
re-computation for each crop"), through vggspec's own test pipeline, in the same run; and
(--engines) evaluation on each inference engine against the same engines run directly.

Run: python bench/eval.py [--config A] [--scales 256,384,512] [--images 2] [--threads N]
     python bench/eval.py --engines [--config D] [--scales 256,384] [--rounds 5] [--pairs 7]
     python bench/eval.py --demo RUN [--rounds 5]

--engines: D (random Glorot weights) densely at Q = 256 and 384 through vggspec's
`evaluate` on every installed engine × precision and with `--engine auto --precision auto`,
against ONNX Runtime and OpenVINO (f32 and the bf16 precision hint) run directly on the
model vggspec exports, and torch.compile with freezing (fp32, and bf16 under autocast with
NHWC), all in this process, the candidates in rotated order each round; images/s medians,
ratios, and agreement with torch fp32 (max relative error of the score map, top-1); then
each vggspec engine and that engine run directly in --pairs back-to-back pairs (which goes
first alternating): the acceptance ratios. About 10 minutes on 2 cores. --demo RUN: on a
trained demo run, `run eval` with its defaults against its compute-only floor (the net's
seconds in a run without the read-ahead thread and the single decode), and each engine ×
precision's top-1 against fp32's.

Writes --images synthetic 500×375 photos (ILSVRC's typical size) to a temporary
ImageFolder, then evaluates them with random weights (timing does not depend on them) in
a fresh process per method: dense (whole image + flip at each Q) and multi-crop (5×5 grid
× 2 flips at each Q: 150 crops over 3 scales). Prints, per method, images/s of compute
(decoding excluded), the multiply-accumulates per image from the compiler's count, and
the peak resident memory while evaluating (VmHWM, reset once the net is loaded; Linux)
against the memory of the loaded net; then the ratio dense / multi-crop in images/s.
The default run takes about 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vggspec.threads import sleep_when_idle

sleep_when_idle()  # as `vggspec run eval` does, before torch loads

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTO = (500, 375)  # (w, h)


def write_photos(root: Path, count: int) -> None:
    """Smooth random colour fields with noise: JPEG-compressible like photos."""
    rng = np.random.default_rng(0)
    folder = root / "val" / "c0"
    folder.mkdir(parents=True)
    for k in range(count):
        low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(low).resize(PHOTO, Image.Resampling.BICUBIC), float)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{k:03d}.jpg", quality=90)


def status_mib(field: str) -> float | None:
    """A memory figure of /proc/self/status (Linux) in MiB: VmRSS now, VmHWM its peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """The peak resident memory: VmHWM, which `reset_peak` can reset, else ru_maxrss (the
    peak since the process started; KiB on Linux)."""
    peak = status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Forget the peak so far (loading the net copies its weights once): Linux ≥ 4.0."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(args) -> None:
    """One method in this fresh process; prints one JSON line."""
    import torch
    from vggspec.runtime.data.image_folder import scan_image_folder
    from vggspec.runtime.eval.classes import class_order
    from vggspec.runtime.eval.classify.evaluate import EvalSettings, evaluate
    from vggspec.runtime.eval.models import load_checkpoint_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint_model(args.model, "torch")
    model.scales = [int(q) for q in args.scales.split(",")]
    folder = scan_image_folder(args.data, "val", classes=model.class_names)
    _, orders = class_order([model], folder.classes)
    since_load = reset_peak()
    loaded = status_mib("VmRSS") or 0.0
    settings = EvalSettings(methods=(args.child,), workers=0, grid=args.grid)
    started = time.perf_counter()
    ev = evaluate([model], orders, model.class_names, folder, settings)
    wall = time.perf_counter() - started
    seconds = ev.seconds[args.child]
    macs = 0
    for q in model.scales:
        for i in range(len(folder)):
            if args.child == "dense":
                macs += 2 * dense_macs(model, q, folder.sizes[i])
            else:
                macs += 2 * args.grid**2 * model.net.graph.graph["totals"].macs
    print(
        json.dumps(
            {
                "method": args.child,
                "images": len(folder),
                "compute_seconds": seconds,
                "wall_seconds": wall,
                "peak_mib": peak_rss_mib(),
                "loaded_mib": loaded,
                "peak_since_load": since_load,
                "gmacs_per_image": macs / len(folder) / 1e9,
                "threads": torch.get_num_threads(),
            }
        )
    )


def dense_macs(model, q: int, size: tuple[int, int]) -> int:
    from vggspec.compiler import dense_graph
    from vggspec.runtime.eval.images import scaled_geometry

    (w, h), _ = scaled_geometry(size, q, (model.input_size[1], model.input_size[0]), 3.0)
    return dense_graph(model.net.graph, (h, w)).graph["totals"].macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a spec under specs/ (default A; D with --engines)")
    parser.add_argument(
        "--scales", help="test scales (default 256,384,512; 256,384 with --engines)"
    )
    parser.add_argument("--engines", action="store_true", help="engines × precisions vs peers")
    parser.add_argument("--demo", metavar="RUN", help="a trained demo run: floor and agreement")
    parser.add_argument("--rounds", type=int, default=5, help="rotated rounds (--engines, --demo)")
    parser.add_argument(
        "--pairs", type=int, default=7, help="--engines: back-to-back pairs per Q and engine"
    )
    parser.add_argument("--no-compile", action="store_true", help="--engines without torch.compile")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--child", choices=("dense", "multi-crop"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.demo:
        from eval_engines import demo_section

        demo_section(args)
        return
    if args.engines:
        from eval_engines import engines_section

        args.config, args.scales = args.config or "D", args.scales or "256,384"
        engines_section(args, write_photos)
        return
    args.config, args.scales = args.config or "A", args.scales or "256,384,512"
    import torch

    import vggspec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_photos(tmp / "data", args.images)
        torch.manual_seed(0)
        net = vggspec.build_net(ROOT / "specs" / f"{args.config}.vgg", backend="torch")
        vggspec.save(
            net,
            vggspec.RunDir(tmp).model,
            vggspec.ModelInfo(
                vggspec.Preprocessing.trained([123.7, 116.8, 103.9]),
                tuple(f"c{i}" for i in range(net.num_classes)),
            ),
        )
        del net
        print(
            f"config {args.config}, Q = {args.scales}, {args.images} image(s) of "
            f"{PHOTO[0]}x{PHOTO[1]}, torch {torch.__version__}, random weights"
        )
        results = {}
        for method in ("dense", "multi-crop"):
            command = [
                sys.executable,
                __file__,
                "--child",
                method,
                "--model",
                str(vggspec.RunDir(tmp).model),
                "--data",
                str(tmp / "data"),
                "--scales",
                args.scales,
                "--grid",
                str(args.grid),
            ]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {method} process failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[method] = r
            rate = r["images"] / r["compute_seconds"]
            print(
                f"  {method:10s} {rate:7.3f} images/s  ({r['compute_seconds']:.1f} s compute, "
                f"{r['gmacs_per_image']:.0f} GMAC/image, {r['threads']} threads)  "
                f"RSS {r['loaded_mib']:.0f} MiB with the net loaded, peak "
                f"{r['peak_mib']:.0f} MiB "
                + ("while evaluating" if r["peak_since_load"] else "in the process")
                + f" (+{r['peak_mib'] - r['loaded_mib']:.0f})"
            )
        d, m = results["dense"], results["multi-crop"]
        speed = (d["images"] / d["compute_seconds"]) / (m["images"] / m["compute_seconds"])
        crops = 2 * args.grid**2 * len(args.scales.split(","))
        fewer = m["gmacs_per_image"] / d["gmacs_per_image"]
        print(
            f"  dense evaluation: {speed:.2f}x the images/s of {crops}-crop evaluation "
            f"(it needs {fewer:.2f}x fewer MACs)"
        )


if __name__ == "__main__":
    main()
