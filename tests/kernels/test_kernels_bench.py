"""The benchmark's wiring, on the CPU: it exits cleanly without CUDA, and what it times agrees."""

import subprocess
import sys
from pathlib import Path

import torch
from kernel_checks import assert_close
from vggspec.compiler.kernels import conv2d_bias_act, linear_bias_act, max_pool2x2
from vggspec.compiler.kernels.shapes import ConvLaunch

from bench.kernels import bench_training_steps, compare_training_step, conv_cases

ROOT = Path(__file__).resolve().parents[2]


def test_bench_without_cuda_says_so_and_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "bench.kernels", "--batch", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA" in done.stdout


def test_bench_pairs_compute_the_same_gradients():
    layer = ConvLaunch("conv", 2, 5, 6, 7, 9, 3, 3, 1, 1)
    cases = conv_cases(layer, torch.float32, dev="cpu")
    assert_close(cases["fwd"][0](), cases["fwd"][1](), 1e-5, "bench pairing", "fwd")
    (dx,) = cases["dgrad"][0]()
    assert_close(dx, cases["dgrad"][1]()[0], 1e-5, "bench pairing", "dgrad")
    dw, db = cases["wgrad"][0]()
    _, rw, rb = cases["wgrad"][1]()
    assert_close(dw, rw, 1e-5, "bench pairing", "wgrad")
    assert_close(db, rb, 1e-5, "bench pairing", "bias")


class _Tiny(torch.nn.Module):
    def __init__(self, fused: bool):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 5)
        self.fused = fused

    def forward(self, x):
        if self.fused:
            h = max_pool2x2(conv2d_bias_act(x, self.conv.weight, self.conv.bias, (1, 1)))
            return linear_bias_act(h.flatten(1), self.fc.weight, self.fc.bias, relu=False)
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(h.flatten(1))


def test_compare_training_step_runs_both_nets():
    fused, plain = _Tiny(True), _Tiny(False)
    fused.load_state_dict(plain.state_dict())
    start = {k: v.clone() for k, v in plain.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    assert_close(fused(x), plain(x), 1e-5, "bench pairing", "tiny net")  # same function
    out = compare_training_step(
        fused,
        plain,
        batch=2,
        size=8,
        classes=5,
        dtype=torch.float32,
        steps=1,
        device="cpu",
        warmup=0,
    )
    assert set(out) == {"triton_ms", "torch_ms", "ratio"}
    assert out["ratio"] == out["triton_ms"] / out["torch_ms"]
    # both nets took one step, the same one (one batch, same weights, same loss)
    after = fused.state_dict()
    for name, before in start.items():
        assert_close(after[name], plain.state_dict()[name], 1e-5, "bench step", name)
        assert not torch.equal(after[name], before), f"{name} did not move"


def test_whole_step_benchmark_builds_both_backends_of_a_spec(tmp_path):
    spec = tmp_path / "tiny.vgg"
    spec.write_text("input 8x8 RGB\nconv3-4 maxpool\nFC-6 FC-5 soft-max\n")
    (row,) = bench_training_steps(
        str(spec), batches=(2,), dtypes=("tf32",), device="cpu", steps=1, warmup=0
    )
    assert row.keys() == {"spec", "batch", "dtype", "triton_ms", "torch_ms", "ratio"}
    assert (row["spec"], row["batch"], row["dtype"]) == (str(spec), 2, "tf32")
    assert row["ratio"] == row["triton_ms"] / row["torch_ms"]
