"""`vggspec convert` on a VGG-16-sized .caffemodel: time and peak memory against reading its bytes.

    python bench/convert.py [--keep DIR]

Writes a synthetic VGG_ILSVRC_16_layers.caffemodel (the release's V1 layout and legacy
num/channels/height/width blobs, its conv, ReLU, pooling, InnerProduct and soft-max layers,
random float32 weights, 553 MB = 528 MiB like the real file) with numpy bytes and
hand-encoded wire format, then runs each of these in a fresh
child process and reports its wall time and peak memory (ru_maxrss):
  baseline   import torch and vggspec's converter, nothing else
  reference  read the file's bytes once (open().read())
  convert    read + compare with specs/D.vgg + match + write the .safetensors (the CLI)
  in memory  read + match + load into a Net (what --weights FILE.caffemodel needs)
The issue's goal: convert ≤ 15 s and peak ≤ 2× the file size on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

SPEC = Path(__file__).resolve().parent.parent / "specs" / "D.vgg"
# VGG-16 (configuration D): conv widths per block, then the three FC layers.
CONVS = [(1, 64), (1, 64), (2, 128), (2, 128), (3, 256), (3, 256), (3, 256)]
CONVS += [(4, 512)] * 3 + [(5, 512)] * 3
V1_CONVOLUTION, V1_INNER_PRODUCT, V1_POOLING, V1_RELU, V1_SOFTMAX = 4, 14, 17, 18, 20
NET_NAME = b"VGG_ILSVRC_16_layers"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_field(number: int, size: int) -> bytes:
    return key(number, 2) + varint(size)


def blob_head(shape: tuple[int, ...]) -> tuple[bytes, int]:
    """A BlobProto's bytes before its float payload, and the blob's total length."""
    dims = (1,) * (4 - len(shape)) + tuple(shape)
    head = b"".join(key(n, 0) + varint(d) for n, d in zip((1, 2, 3, 4), dims, strict=True))
    payload = 4 * int(np.prod(shape))
    head += length_field(5, payload)  # data: packed floats
    return head, len(head) + payload


def vgg16_layers():
    """(name, V1 type, weight shape, bias shape) in file order; ReLUs without blobs."""
    channels, layers = 3, []
    for block, width in CONVS:
        index = sum(1 for name, *_ in layers if name.startswith(f"conv{block}_")) + 1
        layers.append((f"conv{block}_{index}", V1_CONVOLUTION, (width, channels, 3, 3), (width,)))
        channels = width
    for name, (out, inputs) in zip(
        ("fc6", "fc7", "fc8"), ((4096, 512 * 7 * 7), (4096, 4096), (1000, 4096)), strict=True
    ):
        layers.append((name, V1_INNER_PRODUCT, (out, inputs), (out,)))
    return layers


# The last conv of each block: a 2×2 max pooling follows it (pool1 … pool5).
BLOCK_ENDS = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}


def write_caffemodel(path: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(length_field(1, len(NET_NAME)) + NET_NAME)
        for name, kind, weight, bias in vgg16_layers():
            blobs = [blob_head(weight), blob_head(bias)]
            body = length_field(4, len(name)) + name.encode() + key(5, 0) + varint(kind)
            # num_output; a conv's pad 1 and kernel_size 3 (convolution_param, field 10),
            # an InnerProduct's inner_product_param (field 17).
            params = key(1, 0) + varint(weight[0])
            params += (
                key(3, 0) + varint(1) + key(4, 0) + varint(3) if kind == V1_CONVOLUTION else b""
            )
            body += length_field(10 if kind == V1_CONVOLUTION else 17, len(params)) + params
            size = len(body) + sum(len(length_field(6, n)) + n for _, n in blobs)
            f.write(length_field(2, size) + body)
            for (head, n), shape in zip(blobs, (weight, bias), strict=True):
                f.write(length_field(6, n) + head)
                values = rng.standard_normal(shape, dtype=np.float32)
                values *= 0.01
                f.write(values.astype("<f4").tobytes())
            if name != "fc8":  # the class scores go to the soft-max as they are
                relu = length_field(4, len(name) + 5) + f"relu_{name}".encode()
                relu += key(5, 0) + varint(V1_RELU)
                f.write(length_field(2, len(relu)) + relu)
            if name in BLOCK_ENDS:  # pooling_param (19): kernel_size 2, stride 2; MAX
                pool = f"pool{name[4]}".encode()
                params = key(2, 0) + varint(2) + key(3, 0) + varint(2)
                layer = length_field(4, len(pool)) + pool + key(5, 0) + varint(V1_POOLING)
                layer += length_field(19, len(params)) + params
                f.write(length_field(2, len(layer)) + layer)
        prob = length_field(4, 4) + b"prob" + key(5, 0) + varint(V1_SOFTMAX)
        f.write(length_field(2, len(prob)) + prob)
    return path.stat().st_size


CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from vggspec.compiler import load_spec
    from vggspec.runtime.io.convert import convert, to_net, write
    task, source, spec, out = sys.argv[1:5]
    start = time.perf_counter()
    if task == "write":
        import runpy
        runpy.run_path(out, run_name="bench")["write_caffemodel"](Path(source))
    elif task == "reference":
        data = Path(source).read_bytes()
    elif task == "convert":
        write(convert(source, load_spec(spec), spec), out)
    elif task == "memory":
        net = to_net(convert(source, load_spec(spec), spec))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # VmHWM: the same peak counted for this program only (ru_maxrss carries the parent's
    # peak over fork + exec; the parent stays small, so the two should agree).
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    hwm = int(status.split()[0]) * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, "hwm": hwm}))
    """
)


def run_child(task: str, source: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, task, str(source), str(SPEC), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / "VGG_ILSVRC_16_layers.caffemodel"
        # Written by a child: a parent that had held the weights would pass its peak on
        # to every child's ru_maxrss.
        seconds = run_child("write", source, Path(__file__).resolve())["seconds"]
        size = source.stat().st_size
        print(f"wrote {source.name}: {size:,} bytes ({size / 2**20:.0f} MiB) in {seconds:.1f} s")
        out = folder / "vgg16.safetensors"
        rows = [(task, run_child(task, source, out)) for task in ("baseline", "reference")]
        rows += [(task, run_child(task, source, out)) for task in ("convert", "memory")]
        base, reference = rows[0][1], rows[1][1]
        header = ("seconds", "× read", "peak MiB", "× file", "+import", "VmHWM")
        print(f"{'':10}  " + "  ".join(f"{h:>8}" for h in header))
        for task, r in rows:
            extra = (r["peak"] - base["peak"]) / size
            print(
                f"{task:10}  {r['seconds']:8.2f}  {r['seconds'] / reference['seconds']:8.2f}  "
                f"{r['peak'] / 2**20:8.0f}  {r['peak'] / size:8.2f}  {extra:8.2f}  "
                f"{r['hwm'] / 2**20:8.0f}"
            )
        print(
            "× read: time over reading the bytes once; × file: peak over the file size; "
            "+import: (peak − baseline) over the file size"
        )
        if out.exists():
            print(f"wrote {out.name}: {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
