"""Per-layer VGG-16 conv kernels (fwd, dgrad, wgrad) against cuDNN, and a whole training step
of a spec (VGG-16 = config D by default) through the triton backend against the torch backend.

Run:  python bench/kernels.py [--batch 64 256] [--dtype bf16 tf32] [--spec specs/D.vgg]
                              [--only layers|step]
Needs a CUDA GPU; without one it says so and exits 0. Ratios are Triton time / reference
time measured in the same run (below 1 means the Triton side is faster).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vggspec.compiler.kernels import conv2d_bias_act, softmax_cross_entropy  # noqa: E402
from vggspec.compiler.kernels.shapes import vgg16_conv_launches  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "tf32": torch.float32}


def _time_ms(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn`` with CUDA events (L2 flushed between runs)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=5, rep=reps * 5, return_mode="median")


def conv_cases(layer, dtype, dev="cuda"):
    """Closures running each training kernel of one layer, Triton and cuDNN side by side.

    Each value is (triton, reference); both return the tensors they compute, so the
    pairing can be checked for equality as well as timed.
    """
    fmt = torch.channels_last
    x = torch.randn(layer.batch, layer.c_in, layer.h, layer.w, device=dev, dtype=dtype)
    x = x.contiguous(memory_format=fmt)
    w = torch.randn(layer.c_out, layer.c_in, 3, 3, device=dev, dtype=dtype) * 0.05
    w = w.contiguous(memory_format=fmt)
    b = torch.zeros(layer.c_out, device=dev, dtype=dtype)
    pad = (layer.ph, layer.pw)

    def triton_graph(wrt):
        leaves = [
            t.detach().requires_grad_(n in wrt) for n, t in zip("xwb", (x, w, b), strict=True)
        ]
        y = conv2d_bias_act(leaves[0], leaves[1].contiguous(), leaves[2], pad, True)
        return y, [t for t, n in zip(leaves, "xwb", strict=True) if n in wrt]

    y_ref = F.relu(F.conv2d(x, w, b, padding=pad))
    dy = torch.randn_like(y_ref)
    y_t, xs = triton_graph("x")
    y_tw, wbs = triton_graph("wb")

    def cudnn_bwd(mask):
        g = torch.ops.aten.threshold_backward(dy, y_ref, 0)
        return torch.ops.aten.convolution_backward(
            g, x, w, [layer.c_out], [1, 1], list(pad), [1, 1], False, [0, 0], 1, mask
        )

    return {
        "fwd": (
            lambda: conv2d_bias_act(x, w, b, pad, True),
            lambda: F.relu(F.conv2d(x, w, b, padding=pad)),
        ),
        "dgrad": (
            lambda: torch.autograd.grad(y_t, xs, dy, retain_graph=True),
            lambda: cudnn_bwd([True, False, False]),
        ),
        "wgrad": (
            lambda: torch.autograd.grad(y_tw, wbs, dy, retain_graph=True),
            lambda: cudnn_bwd([False, True, True]),
        ),
    }


def _allow_tf32() -> None:
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def bench_conv_layers(batches=(64, 256), dtypes=("bf16", "tf32")) -> list[dict]:
    """Time every VGG-16 conv layer's three training kernels against cuDNN."""
    _allow_tf32()
    rows = []
    print(
        f"{'layer':<8} {'batch':>5} {'dtype':<5} {'kernel':<6} {'triton ms':>10} {'TF/s':>7} "
        f"{'cudnn ms':>9} {'TF/s':>7} {'ratio':>6}"
    )
    for dtype_name in dtypes:
        for batch in batches:
            for layer in vgg16_conv_launches(batch, 224):
                flops = 2 * batch * layer.h * layer.w * layer.c_out * layer.c_in * 9
                for kernel, (ours, ref) in conv_cases(layer, DTYPES[dtype_name]).items():
                    if kernel == "dgrad" and not layer.input_grad:
                        continue
                    t_ours, t_ref = _time_ms(ours), _time_ms(ref)
                    row = {
                        "layer": layer.name,
                        "batch": batch,
                        "dtype": dtype_name,
                        "kernel": kernel,
                        "triton_ms": t_ours,
                        "cudnn_ms": t_ref,
                        "triton_tflops": flops / t_ours / 1e9,
                        "cudnn_tflops": flops / t_ref / 1e9,
                        "ratio": t_ours / t_ref,
                    }
                    rows.append(row)
                    print(
                        f"{layer.name:<8} {batch:>5} {dtype_name:<5} {kernel:<6} "
                        f"{t_ours:>10.3f} {row['triton_tflops']:>7.1f} {t_ref:>9.3f} "
                        f"{row['cudnn_tflops']:>7.1f} {row['ratio']:>6.2f}",
                        flush=True,
                    )
                torch.cuda.empty_cache()
    return rows


def compare_training_step(
    triton_net: torch.nn.Module,
    torch_net: torch.nn.Module,
    batch: int = 64,
    size: int = 224,
    classes: int = 1000,
    dtype: torch.dtype = torch.bfloat16,
    steps: int = 10,
    lr: float = 1e-2,
    device: str = "cuda",
    warmup: int = 3,
) -> dict:
    """Milliseconds per SGD step (paper recipe: momentum 0.9, weight decay 5e-4) of two nets.

    Both map (batch, 3, size, size) images to class scores; the Triton net's loss is the
    fused soft-max + cross-entropy kernel, the torch net's F.cross_entropy. Call it with
    ``lower(graph, "triton")`` and ``lower(graph, "torch")`` of one spec on a CUDA device.
    """
    results = {}
    # One batch for both nets, so that from the same weights they take the same steps.
    batch_images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    for name, net, loss_fn in (
        ("triton", triton_net, softmax_cross_entropy),
        ("torch", torch_net, F.cross_entropy),
    ):
        net = net.to(device=device, dtype=dtype).train()
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        images = batch_images.to(dtype).contiguous(memory_format=torch.channels_last)

        def step(net=net, opt=opt, images=images, labels=labels, loss_fn=loss_fn):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(images), labels).backward()
            opt.step()

        for _ in range(warmup):
            step()
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(device)
        results[f"{name}_ms"] = (time.perf_counter() - start) / steps * 1e3
    results["ratio"] = results["triton_ms"] / results["torch_ms"]
    print(
        f"training step, batch {batch}, {dtype}: triton {results['triton_ms']:.1f} ms, "
        f"torch {results['torch_ms']:.1f} ms, ratio {results['ratio']:.2f}"
    )
    return results


def bench_training_steps(
    spec: str, batches=(64, 256), dtypes=("bf16", "tf32"), device="cuda", **timing
) -> list[dict]:
    """A whole SGD step of the spec's net, triton backend against torch backend (cuDNN),
    the two nets holding the same weights: a row per dtype and batch (spec, batch, dtype and
    compare_training_step's times). `timing`: compare_training_step's steps/warmup."""
    import vggspec

    _allow_tf32()
    rows = []
    for dtype_name in dtypes:
        for batch in batches:
            torch_net = vggspec.build_net(spec, backend="torch")
            triton_net = vggspec.build_net(spec, backend="triton")
            triton_net.load_state_dict(torch_net.state_dict())
            size = torch_net.input_size
            times = compare_training_step(
                triton_net,
                torch_net,
                batch,
                size[0],
                torch_net.num_classes,
                DTYPES[dtype_name],
                device=device,
                **timing,
            )
            rows.append({"spec": str(spec), "batch": batch, "dtype": dtype_name, **times})
            del torch_net, triton_net
            torch.cuda.empty_cache()
    return rows


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["bf16", "tf32"])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "D.vgg"), help="for the step")
    parser.add_argument("--only", choices=("layers", "step"), help="one half of the benchmark")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/kernels.py: no CUDA device here; nothing to time (exit 0).")
        return 0
    if args.only != "step":
        bench_conv_layers(tuple(args.batch), tuple(args.dtype))
    if args.only != "layers":
        bench_training_steps(args.spec, tuple(args.batch), tuple(args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
