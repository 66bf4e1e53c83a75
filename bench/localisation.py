"""Protocol 2 of Appendix A (Table 9) at ILSVRC scale: the dense forward passes against the
greedy box merging, and the O(n²) merge against the O(n³) one it replaced, in the same run.

Run: python bench/localisation.py [--images 2] [--scales 256,384,512] [--demo-images 500]
                                  [--demo-scales 32,224] [--skip merge,dloc,demo] [--threads N]
                                  [--repeats 9] [--against REV] [--demo-rounds 3]

1. merge: one class's boxes, n = 140 … 1,200, three kinds of sets (clusters around two
   objects; boxes anywhere; the protocol's windows: every 32-px position of a 224 window at
   Q = 256, 384, 512 of a 500×375 image, windows on the object predicting it and the others
   boxes of their own), the merge and the reference (tests/box_merge_reference.py) on the
   same boxes, calls taking turns (--repeats of the merge, a third as many of the slow
   reference): the minimum and the median of the CPU and the wall time (on a loaded machine
   the CPU time is the steadier figure, and about what an idle machine's wall time would
   be), the ratio of the medians, whether the groups are the same (they must be), and the
   load average before and after. --against REV (a git revision, e.g. main) times
   the merge (runtime/eval/localise/merge.py) as it is there too, in the same turns, and prints
   REV's / this one's median CPU time.
2. dloc: protocol 2 for specs/D-loc.vgg (PCR, 1000 classes) rated by specs/D.vgg at --scales
   with flips, one net and two fused, on --images synthetic 500×375 images, one image per
   batch so that merges can overlap the next image's forward. Random weights (timings do
   not depend on them) except the box layer, scaled to predict a centred box per window
   with a little spread, so that boxes overlap and merge as a trained net's do. Per image:
   forward (and box decoding) time, merge time, their ratio, the old merge's time on the
   same boxes; images/s end to end with the merge in line and in the worker thread.
   D on 2 CPU cores at Q = 512 takes seconds per image: keep --images small.
3. demo: the demo-loc body (specs/demo-loc.vgg, a 32-pixel net, 10 classes) rated by
   specs/demo.vgg, random weights as above, on --demo-images boxed demo images at Q = 32
   (the demo recipe's scale) and Q = 224 (about 200 positions a map) with flips: one net
   against two fused, end to end with the worker thread, taking turns --demo-rounds times
   (after an untimed pass over every image: torch's first pass at an image size is slower).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from box_merge_reference import merge_boxes_reference  # noqa: E402
from eval import PHOTO, write_photos  # noqa: E402  (bench/eval.py: 500×375 synthetic photos)
from vggspec.runtime.data import boxes as bx  # noqa: E402
from vggspec.runtime.data.demo import make_demo_dataset  # noqa: E402
from vggspec.runtime.data.image_folder import scan_image_folder  # noqa: E402
from vggspec.runtime.eval.localise import passes as localise  # noqa: E402
from vggspec.runtime.eval.localise.merge import merge_boxes, union  # noqa: E402
from vggspec.runtime.eval.localise.scoring import TOP_K  # noqa: E402
from vggspec.runtime.eval.models import EvalModel  # noqa: E402
from vggspec.runtime.eval.scale_passes import PassSettings  # noqa: E402

import vggspec  # noqa: E402

MEAN = [123.7, 116.8, 103.9]


# ---------------------------------------------------------------------------- box sets


def clusters(rng, n):
    xy = rng.uniform(0, 300, (2, 2))
    objects = np.concatenate([xy, xy + rng.uniform(60, 200, (2, 2))], axis=1)
    pick = objects[rng.integers(0, 2, n)]
    return pick + rng.normal(0, 0.1, (n, 4)) * (pick[:, 2:3] - pick[:, :1])


def anywhere(rng, n):
    xy = rng.uniform(0, 400, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(30, 300, (n, 2))], axis=1)


def windows(rng, n, obj=(120.0, 80.0, 380.0, 300.0)):
    """The protocol's boxes for one class: per 224 window every 32 px at Q = 256, 384, 512
    (and again, mirrored, for the flip), in the 500×375 image."""
    obj = np.array(obj)
    out = []
    while len(out) < n:
        for q in (256, 384, 512):
            f = q / min(PHOTO)
            for y in np.arange(0, PHOTO[1] * f - 223, 32):
                for x in np.arange(0, PHOTO[0] * f - 223, 32):
                    win = np.array([x, y, x + 224, y + 224]) / f
                    inside = min(win[2], obj[2]) > max(win[0], obj[0]) and min(
                        win[3], obj[3]
                    ) > max(win[1], obj[1])
                    if inside:
                        out.append(obj + rng.normal(0, 0.05, 4) * (obj[2] - obj[0]))
                    else:
                        c = rng.uniform(win[:2], win[2:])
                        half = rng.uniform(10, 90, 2) / f
                        out.append(np.r_[c - half, c + half])
    return np.array(out[:n])


# Where the merge has lived: today's place first, then the flat runtime/eval/ before issue 23.
MERGE_PATHS = ("runtime/eval/localise/merge.py", "runtime/eval/box_merge.py")


def merge_at(revision: str):
    """merge_boxes as the merge module is at a git revision of this repository."""
    for path in MERGE_PATHS:
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if shown.returncode == 0:
            break
    else:
        print(f"--against {revision}: {shown.stderr.strip().splitlines()[-1]}", file=sys.stderr)
        raise SystemExit(2)
    source = re.sub(r"from \.+data import", "from vggspec.runtime.data import", shown.stdout)
    # Its own package's modules (e.g. the compiled loop, greedy.py) as they are in this tree.
    source = re.sub(r"from \.(\w+) import", r"from vggspec.runtime.eval.localise.\1 import", source)
    module = types.ModuleType(f"box_merge_at_{revision}")
    sys.modules[module.__name__] = module  # for its dataclasses
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module.merge_boxes


def timed(fn) -> tuple[float, float, object]:
    """(wall, CPU) seconds of one call, and its result (CPU: this process's user + system
    time, what an idle machine's wall time would be for single-threaded work)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def groups_of(groups) -> list[tuple]:
    return [(g.box, g.rating, g.members) for g in groups]


def bench_merge(repeats: int, against: str | None, merge_against) -> None:
    merges = {"new": merge_boxes, "old": merge_boxes_reference}
    if against:
        merges[against] = merge_against
    print(
        f"1. merge, one class: ms of CPU and wall, min and median of {repeats} calls "
        f"({max(1, repeats // 3)} of the old), taking turns; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    columns = "".join(f" {f'{k} cpu':^13} {f'{k} wall':^13}" for k in merges)
    extra = f" {against + '/new':>9}" if against else ""
    print(f"{'boxes':>6} {'set':<9} {'merges':>6}{columns} {'old/new':>8}{extra}  same")
    print(f"{'':>23}" + f" {'min':>6} {'median':>6}" * 2 * len(merges) + f" {'(cpu)':>8}")
    for merge in merges.values():  # numba compiles (or reads its cache) on the first call
        merge(windows(np.random.default_rng(1), 20), np.ones(20))
    rng = np.random.default_rng(0)
    for n in (140, 280, 560, 1200):
        for name, make in (("clusters", clusters), ("anywhere", anywhere), ("windows", windows)):
            boxes, scores = make(rng, n), rng.random(n)
            times: dict[str, list] = {k: [] for k in merges}
            outputs = {}
            for turn in range(repeats):
                for key, merge in merges.items():
                    if key != "old" or turn < max(1, repeats // 3):
                        wall, cpu, out = timed(lambda m=merge, b=boxes, s=scores: m(b, s))
                        times[key].append((cpu, wall))
                        outputs[key] = groups_of(out)
            same = all(out == outputs["old"] for out in outputs.values())
            median = {k: np.median(v, axis=0) for k, v in times.items()}
            figures = "".join(
                f" {min(v)[0] * 1e3:>6.1f} {median[k][0] * 1e3:>6.1f}"
                f" {min(w for _, w in v) * 1e3:>6.1f} {median[k][1] * 1e3:>6.1f}"
                for k, v in times.items()
            )
            ratio = median["old"][0] / median["new"][0]
            extra = f" {median[against][0] / median['new'][0]:>8.2f}x" if against else ""
            print(
                f"{n:>6} {name:<9} {n - len(outputs['old']):>6}{figures} {ratio:>7.1f}x{extra}"
                f"  {same}"
            )
            if not same:
                raise SystemExit("the merges disagree")
    print(f"   load average after: {os.getloadavg()[0]:.1f}")


# ---------------------------------------------------------------------------- protocol 2


def eval_model(spec: str, scales: list[int], box_spread: float | None, seed: int) -> EvalModel:
    """A net of random weights as protocol 2 sees it. `box_spread`: a box net whose last
    layer predicts, per window, the centre 60 % of it with about this spread of targets."""
    torch.manual_seed(seed)
    net = vggspec.build_net(ROOT / "specs" / spec, backend="torch").eval()
    if box_spread is not None:
        last = [m for m in net.modules() if getattr(m, "bias", None) is not None][-1]
        with torch.no_grad():
            probe = net(torch.randn(1, 3, *net.input_size) * 50)
            last.weight.mul_(box_spread / float(probe.std()))
            centre = bx.encode([[0.2, 0.2, 0.8, 0.8]], (1, 1))[0]
            last.bias.copy_(torch.as_tensor(np.tile(centre, last.bias.numel() // 4)))
    net = vggspec.fold_batch_norm(net)
    twin = vggspec.densify(net).eval()
    model = EvalModel(
        Path(spec).stem, "random", net, twin, vggspec.Preprocessing.trained(MEAN), None, None
    )
    model.scales, model.boxes = scales, box_spread is not None
    return model


def run_protocol(nets, classifier, folder, classes: int, *, overlap: bool, max_images: int,
                 record: list | None = None) -> tuple[float, float, list]:  # fmt: skip
    """(seconds end to end, seconds merging, guesses); `record` collects each merge's
    (input, output)."""
    merging = [0.0]
    merge = localise._merge

    def timed(top_classes, predictions):
        start = time.perf_counter()
        out = merge(top_classes, predictions)
        merging[0] += time.perf_counter() - start
        if record is not None:
            record.append((top_classes, predictions, out))
        return out

    rng = np.random.default_rng(0)
    top = np.stack([rng.choice(classes, TOP_K, replace=False) for _ in range(len(folder))])
    rows = [list(range(classes))] * len(nets)
    localise._merge = timed
    try:
        start = time.perf_counter()
        settings = PassSettings(
            flip=True, max_images=max_images, max_pixels=max_images * 2 * 700 * 700, workers=1,
            max_aspect=3.0,
        )  # fmt: skip
        guesses, _ = localise.dense_guesses(
            nets, rows, classifier, top, folder, range(len(folder)), settings, "cpu",
            overlap=overlap,
        )  # fmt: skip
        total = time.perf_counter() - start
    finally:
        localise._merge = merge
    return total, merging[0], guesses


def old_merge(record) -> tuple[float, bool]:
    """The old merge on recorded merges' inputs: (seconds, whether it gave their outputs)."""
    start = time.perf_counter()
    same = True
    for top_classes, predictions, out in record:
        merged = union(predictions)
        guesses = []
        for cls in list(top_classes)[:TOP_K]:
            boxes, scores = merged.get(int(cls), (np.zeros((0, 4)), np.zeros(0)))
            groups = merge_boxes_reference(boxes, scores)
            if groups:
                guesses.append((int(cls), groups[0].box))
        same &= guesses == out
    return time.perf_counter() - start, same


def protocol_rows(label, nets, classifier, folder, classes, max_images, *, inline=True,
                  replay=None) -> float:  # fmt: skip
    """Print one configuration's figures (with `inline`, also the run that merges in line,
    whose forward time is the total less the merging); returns seconds with the worker. The
    old merge replays the first `replay` images' merges (all by default)."""
    n = len(folder)
    record: list = []
    overlapped, merging, guesses = run_protocol(
        nets, classifier, folder, classes, overlap=True, max_images=max_images, record=record
    )
    replayed = record[:replay]
    old, same = old_merge(replayed)
    per_class = np.mean([len(union(p)[int(t[0])][1]) for t, p, _ in record])
    if inline:
        total, merging, again = run_protocol(
            nets, classifier, folder, classes, overlap=False, max_images=max_images
        )
        same &= again == guesses
        forward = total - merging
        figures = f"{forward / n:>9.3f} {merging / n:>9.4f} {merging / forward:>7.2%}"
        in_line = f"{n / total:>8.3f}"
    else:
        figures = f"{'':>9} {merging / n:>9.4f} {'':>7}"
        in_line = f"{'':>8}"
    print(
        f"{label:<16} {per_class:>6.0f} {figures} {old / len(replayed):>9.4f} {in_line} "
        f"{n / overlapped:>8.3f}  {same}"
    )
    return overlapped


def protocol_header(what: str) -> None:
    print(what)
    print(
        f"{'':<16} {'boxes':>6} {'forward':>9} {'merge':>9} {'m/f':>7} {'old mrg':>9} "
        f"{'img/s':>8} {'img/s':>8}  same"
    )
    print(
        f"{'':<16} {'/class':>6} {'s/img':>9} {'s/img':>9} {'':>7} {'s/img':>9} "
        f"{'in line':>8} {'worker':>8}"
    )


def bench_dloc(images: int, scales: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_photos(Path(tmp), images)
        folder = scan_image_folder(tmp, "val")
        classifier = eval_model("D.vgg", scales, None, 0)
        first = eval_model("D-loc.vgg", scales, 0.05, 1)
        second = eval_model("D-loc.vgg", scales, 0.05, 2)
        protocol_header(
            f"2. D-loc, protocol 2 at Q={','.join(map(str, scales))} with flips, "
            f"{images} images of {PHOTO[0]}x{PHOTO[1]}, one per batch"
        )
        protocol_rows("one net", [first], classifier, folder, 1000, 1)
        protocol_rows("two nets fused", [first, second], classifier, folder, 1000, 1)


def bench_demo(images: int, scales: list[int], rounds: int) -> None:
    """End to end with the worker thread only (the merge time is the worker's), one net and
    two taking turns `rounds` times; the old merge replays the first 20 images."""
    with tempfile.TemporaryDirectory() as tmp:
        make_demo_dataset(tmp, train_per_class=0, val_per_class=-(-images // 10), boxes=True)
        folder = scan_image_folder(tmp, "val")
        folder.samples, folder.sizes = folder.samples[:images], folder.sizes[:images]
        for q in scales:
            classifier = eval_model("demo.vgg", [q], None, 0)
            first = eval_model("demo-loc.vgg", [q], 0.05, 1)
            second = eval_model("demo-loc.vgg", [q], 0.05, 2)
            # Untimed, every image once: the first pass over an image size pays for torch's
            # kernels of that size (oneDNN's primitives), and the demo's sizes vary.
            run_protocol([first], classifier, folder, 10, overlap=True, max_images=32)
            protocol_header(f"3. demo-loc body, protocol 2 at Q={q} with flips, {images} images")
            one, two = [], []
            for _ in range(rounds):
                one.append(protocol_rows("one net", [first], classifier, folder, 10, 32,
                                         inline=False, replay=20))  # fmt: skip
                two.append(protocol_rows("two nets fused", [first, second], classifier, folder,
                                         10, 32, inline=False, replay=20))  # fmt: skip
            print(
                f"   two nets fused: {np.median(two) / np.median(one):.2f}x the time of one "
                f"(medians of {rounds}); load average {os.getloadavg()[0]:.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--scales", default="256,384,512")
    parser.add_argument("--demo-images", type=int, default=500)
    parser.add_argument("--demo-scales", default="32,224")
    parser.add_argument("--skip", default="", help="parts to leave out: merge,dloc,demo")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=9, help="calls of each merge per set")
    parser.add_argument("--against", help="a git revision whose merge to time as well")
    parser.add_argument("--demo-rounds", type=int, default=3, help="turns of one net and two")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    merge_against = merge_at(args.against) if args.against and "merge" not in skip else None
    print(f"torch threads {torch.get_num_threads()}")
    if "merge" not in skip:
        bench_merge(args.repeats, args.against, merge_against)
    if "dloc" not in skip:
        bench_dloc(args.images, [int(q) for q in args.scales.split(",")])
    if "demo" not in skip:
        bench_demo(
            args.demo_images, [int(q) for q in args.demo_scales.split(",")], args.demo_rounds
        )


if __name__ == "__main__":
    main()
