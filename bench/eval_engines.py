"""bench/eval.py --engines and --demo: D's dense throughput per engine × precision against
the same engines run directly, and the demo's agreement and data-side figures."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "?",
    )  # fmt: skip
    from vggspec.compiler.targets import cpu_has_native_bf16

    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{model}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__}"


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return float((got.float() - reference).abs().max() / reference.abs().max())


class Peer:
    """An engine run directly on the exported dense model (or torch.compile on the twin):
    what a user who skips vggspec's protocol code would time."""

    def __init__(self, label: str, run):
        self.label, self.run = label, run


def peers(twin, onnx_path: Path, compile_torch: bool) -> list[Peer]:
    found = []
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        found.append(
            Peer(
                "onnxruntime fp32",
                lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0]),
            )
        )
    except ImportError:
        pass
    try:
        import openvino

        core = openvino.Core()
        for hint, label in (("f32", "fp32"), ("bf16", "bf16")):
            request = core.compile_model(
                str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": hint}
            ).create_infer_request()
            found.append(Peer(f"openvino {label}", _ov_run(request)))
    except ImportError:
        pass
    if compile_torch:
        import torch._inductor.config as inductor

        inductor.freezing = True
        fp32 = torch.compile(twin)
        found.append(Peer("torch.compile freezing fp32", _no_grad(fp32)))
        bf16 = _autocast_nhwc(twin)
        found.append(Peer("torch.compile freezing bf16 (autocast, NHWC)", bf16))
    return found


def _ov_run(request):
    return lambda x: torch.from_numpy(np.array(request.infer({0: x.numpy()})[0]))


def _no_grad(f):
    def run(x):
        with torch.no_grad():
            return f(x)

    return run


def _autocast_nhwc(twin):
    import copy

    nhwc = copy.deepcopy(twin).to(memory_format=torch.channels_last)
    compiled = torch.compile(nhwc)

    def run(x):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            return compiled(x.contiguous(memory_format=torch.channels_last)).float()

    return run


def engines_section(args, write_photos) -> None:
    """D's dense throughput at each Q for vggspec (`evaluate`, per engine × precision, and
    --engine auto --precision auto) and the peers, rotated rounds, medians."""
    from vggspec.runtime.data.image_folder import scan_image_folder
    from vggspec.runtime.eval.classes import class_order
    from vggspec.runtime.eval.classify.dense import dense_posteriors
    from vggspec.runtime.eval.classify.evaluate import EvalSettings, evaluate
    from vggspec.runtime.eval.engines import engine, installed
    from vggspec.runtime.eval.engines.exported import exported_onnx
    from vggspec.runtime.eval.engines.serving import Serving
    from vggspec.runtime.eval.images import ScaledImages
    from vggspec.runtime.eval.models import load_checkpoint_model

    import vggspec

    scales = [int(q) for q in args.scales.split(",")]
    print(f"{machine()}\n{time.strftime('%Y-%m-%d %H:%M')}, {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("VGGSPEC_ENGINE_CACHE", str(tmp / "engines"))
        write_photos(tmp / "data", args.images)
        torch.manual_seed(0)
        net = vggspec.build_net(
            ROOT / "specs" / f"{args.config}.vgg", backend="torch", init="glorot"
        )
        names = tuple(f"c{i}" for i in range(net.num_classes))
        info = vggspec.ModelInfo(vggspec.Preprocessing.trained([123.7, 116.8, 103.9]), names)
        vggspec.save(net, vggspec.RunDir(tmp).model, info)
        del net
        model = load_checkpoint_model(tmp, "torch")
        folder = scan_image_folder(tmp / "data", "val", classes=model.class_names)
        _, orders = class_order([model], folder.classes)
        started = time.perf_counter()
        onnx_path = exported_onnx(model.twin)
        print(f"{args.config}: dense twin exported in {time.perf_counter() - started:.1f} s "
              f"(once per net: cached by digest); {len(folder)} image(s) of 500x375, each with "
              f"its mirror image, at Q = {args.scales}; "
              f"{torch.get_num_threads()} torch threads")  # fmt: skip

        ours = {}
        for name in installed():
            for precision in engine(name).PRECISIONS:
                ours[f"vggspec {name} {precision}"] = Serving(name, precision)
        ours["vggspec --engine auto --precision auto"] = Serving("auto", "auto")
        heard: list[str] = []
        settings = EvalSettings(workers=0, max_images=args.images, progress=heard.append)

        def run_ours(serving, q):
            model.serving, model.scales = serving, [q]
            ev = evaluate([model], orders, list(model.class_names), folder, settings)
            return ev.seconds["dense"], ev.dense[0]

        warm = {}
        for label, serving in ours.items():  # compile (and choose) once, outside the rounds
            tick = time.perf_counter()
            run_ours(serving, scales[0])
            warm[label] = time.perf_counter() - tick
        auto = "vggspec --engine auto --precision auto"
        for line in heard:
            if "engine auto" in line:
                print(f"  auto's first call (before the rounds, {warm[auto]:.1f} s with its "
                      f"compiles): {line.split('] ', 1)[-1]}")  # fmt: skip
        others = peers(model.twin, onnx_path, not args.no_compile)
        inputs = {}
        for q in scales:
            images = ScaledImages(folder, q, (224, 224))
            x = model.preprocessing(torch.stack([images[i][0] for i in range(len(folder))]))
            inputs[q] = torch.cat([x, x.flip(-1)])
        for peer in others:  # first calls (torch.compile compiles per shape)
            tick = time.perf_counter()
            for q in scales:
                peer.run(inputs[q])
            warm[peer.label] = time.perf_counter() - tick

        # Agreement with torch fp32, on the same batch: the score map's largest relative
        # error, and (ours) the images whose top-1 class is fp32's.
        agreement = {}
        for q in scales:
            with torch.no_grad():
                reference = model.twin(inputs[q])
            p_ref = dense_posteriors(model.twin, inputs[q][: len(folder)]).argmax(1)
            for label, serving in ours.items():
                served = serving.serve(model.twin, inputs[q][:2])
                same = int(
                    (dense_posteriors(served, inputs[q][: len(folder)]).argmax(1) == p_ref).sum()
                )
                error = relative_error(served(inputs[q]), reference)
                agreement.setdefault(label, []).append(f"{error:.1e}, top-1 {same}/{len(folder)}")
            for peer in others:
                error = relative_error(peer.run(inputs[q]), reference)
                agreement.setdefault(peer.label, []).append(f"{error:.1e}")

        labels = list(ours) + [p.label for p in others]
        rates = {(label, q): [] for label in labels for q in scales}
        images = len(folder)
        for r in range(args.rounds):
            order = labels[r % len(labels) :] + labels[: r % len(labels)]
            for q in scales:
                for label in order:
                    if label in ours:
                        seconds, _ = run_ours(ours[label], q)
                    else:
                        peer = next(p for p in others if p.label == label)
                        tick = time.perf_counter()
                        peer.run(inputs[q])
                        seconds = time.perf_counter() - tick
                    rates[label, q].append(images / seconds)
        median = {key: statistics.median(v) for key, v in rates.items()}
        print(f"images/s (median of {args.rounds} rotated rounds; range), ratio to vggspec "
              f"torch fp32; [agreement with torch fp32 per Q: max relative error of the "
              f"score map, top-1]; {load()}")  # fmt: skip
        base = "vggspec torch fp32"
        width = max(map(len, labels))
        for label in labels:
            cells = []
            for q in scales:
                v = rates[label, q]
                cells.append(f"Q={q}: {median[label, q]:6.2f} ({min(v):.2f}-{max(v):.2f}) "
                             f"{median[label, q] / median[base, q]:5.2f}x")  # fmt: skip
            print(
                f"  {label:{width}s}  " + "  ".join(cells) + f"   [{'; '.join(agreement[label])}]"
            )
        # The acceptance figures: each vggspec side and the engine run directly, back to back
        # (which goes first alternates), so that the machine's load drifts less between them
        # than between the rounds' far-apart runs above.
        pairs = [(f"vggspec {p.label}", p.label) for p in others if f"vggspec {p.label}" in ours]
        pairs += [
            (auto, p.label) for p in others if p.label in ("openvino bf16", "onnxruntime fp32")
        ]
        print(f"vggspec / the engine run directly, head to head ({args.pairs} back-to-back "
              f"pairs per Q, first and second in turn; median ratio of images/s, range); "
              f"{load()}")  # fmt: skip
        for mine, theirs in pairs:
            peer = next(p for p in others if p.label == theirs)
            cells = []
            for q in scales:
                each = []
                for r in range(args.pairs):
                    seconds = {}
                    for side in (mine, theirs) if r % 2 == 0 else (theirs, mine):
                        if side == mine:
                            seconds[side], _ = run_ours(ours[mine], q)
                        else:
                            tick = time.perf_counter()
                            peer.run(inputs[q])
                            seconds[side] = time.perf_counter() - tick
                    each.append(seconds[theirs] / seconds[mine])
                cells.append(
                    f"Q={q}: {statistics.median(each):.2f} ({min(each):.2f}-{max(each):.2f})"
                )
            print(f"  {mine} / {theirs} direct: " + ", ".join(cells))
        print(
            "first calls (compile, export cached): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in warm.items())
        )


# `run eval` as before its read-ahead thread and its images decoded once for every scale
# (PassSettings.prefetch, keep_decoded), for the compute-only floor: the net's seconds with
# nothing else running in the process.
THE_OLD_WAY = (
    "import dataclasses, sys; from vggspec.threads import sleep_when_idle; sleep_when_idle(); "
    "from vggspec.runtime.eval.classify import job; made = job.pass_settings; "
    "job.pass_settings = lambda *a: dataclasses.replace(made(*a), prefetch=False, keep_decoded=0); "
    "from vggspec.cli import main; sys.exit(main(sys.argv[1:]))"
)


def demo_section(args) -> None:
    """On a trained demo run: `run eval` with its defaults against its compute-only floor (the
    net's seconds in the same round's run without the read-ahead thread and the images kept
    decoded, where the net computes with nothing else in the process running), against that
    run and the older
    default of one loader process; and every engine × precision's top-1 against fp32's,
    image by image, on the 500 validation images."""
    from vggspec.runtime.eval.engines import engine, installed

    run = args.demo
    vggspec_cmd = [sys.executable, "-m", "vggspec", "run", "eval", "--checkpoint", run, "--json"]
    print(f"{machine()}\n{time.strftime('%Y-%m-%d %H:%M')}, {load()}; demo run {run}")
    before = [sys.executable, "-c", THE_OLD_WAY, *vggspec_cmd[3:]]
    sides = {
        "defaults": vggspec_cmd,
        "as before (no thread, decoded at each Q)": before,
        "--workers 1 (the older default)": [*vggspec_cmd, "--workers", "1"],
    }
    got = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in list(sides)[r % 3 :] + list(sides)[: r % 3]:
            done = subprocess.run(sides[side], capture_output=True, text=True, check=True)
            report = json.loads(done.stdout)
            got[side].append(
                (report["images"], report["seconds"]["dense"], report["seconds"]["total"])
            )
    for side, values in got.items():
        rate = statistics.median(n / total for n, _, total in values)
        share = statistics.median(dense / total for _, dense, total in values)
        print(f"  run eval {side:40s} {rate:6.1f} images/s, compute {100 * share:.0f} % of the "
              f"evaluation's wall time (median of {args.rounds})")  # fmt: skip
    floors = [dense for _, dense, _ in got["as before (no thread, decoded at each Q)"]]
    over = [total / floor for (_, _, total), floor in zip(got["defaults"], floors, strict=True)]
    print(f"  defaults' wall / the compute-only floor (the net's seconds as before, same "
          f"round): {statistics.median(over):.2f} ({min(over):.2f}-{max(over):.2f}), "
          f"{load()}")  # fmt: skip
    print(f"top-1 against torch fp32, image by image (dense, the run's 3 scales, {load()}):")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("torch", "fp32")] + [
            (n, p) for n in installed() for p in engine(n).PRECISIONS if (n, p) != ("torch", "fp32")
        ]
        runs.append(("auto", "auto"))
        top1 = {}
        for name, precision in runs:
            out = Path(tmp) / f"{name}-{precision}.npz"
            flags = ["--engine", name, "--precision", precision, "--posteriors", str(out)]
            command = [*vggspec_cmd, *flags]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            report = json.loads(done.stdout)
            posteriors = np.load(out)
            top1[name, precision] = posteriors[
                "dense@" + ",".join(map(str, report["results"][0]["scales"]))
            ].argmax(1)
            same = int((top1[name, precision] == top1["torch", "fp32"]).sum())
            n = len(top1["torch", "fp32"])
            print(f"  {name} {precision} (ran {report['nets'][0]['engine']}): top-1 error "
                  f"{100 * report['results'][0]['top1_error']:.1f} %, same top-1 as fp32 on "
                  f"{same}/{n} = {100 * same / n:.1f} %")  # fmt: skip
