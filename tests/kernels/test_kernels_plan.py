"""A launch plan runs its kernel on the device of its tensors."""

import contextlib

import torch
from vggspec.compiler.kernels import plan


def test_a_kernel_launches_on_its_tensors_device(monkeypatch):
    """Triton launches on the current CUDA device: the plan makes the tensors' one current
    (a stand-in tensor on cuda:1 here; no GPU is needed to see which device is entered)."""
    entered, launched = [], []

    @contextlib.contextmanager
    def device(where):
        entered.append(where)
        yield

    class Kernel:
        def __getitem__(self, grid):
            return lambda **kwargs: launched.append((grid, entered[-1]))

    class OnSecondGpu:
        dtype = torch.float32
        device = torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "device", device)
    kernel = plan.KernelPlan("k", Kernel(), (3,), {"x": plan.Ptr("fp32"), "n": 5}, {}, 4, 2, None)
    kernel.launch(x=OnSecondGpu())
    assert launched == [((3,), torch.device("cuda", 1))]
    kernel.launch(x=torch.zeros(2))  # a CPU tensor (the interpreter): no device to enter
    assert entered == [torch.device("cuda", 1)] and len(launched) == 2


_NEW_TF32_API = """
import torch
from vggspec.compiler.kernels import conv2d_bias_act, linear_bias_act, plan

seen = []
plan.LAUNCH_OBSERVER = lambda p: seen.append(p) or True  # record, run nothing
torch.backends.cuda.matmul.fp32_precision = "tf32"  # torch >= 2.9's API, legacy flags unset
torch.backends.cudnn.conv.fp32_precision = "ieee"
linear_bias_act(torch.empty(2, 8, device="meta"), torch.empty(4, 8, device="meta"), None)
x, w = torch.empty(1, 3, 4, 4, device="meta"), torch.empty(4, 3, 3, 3, device="meta")
conv2d_bias_act(x, w, None)
print(*[f"{p.kind}={p.constexprs['PRECISION']}" for p in seen])
"""


def test_tf32_set_through_torchs_newer_api_is_followed():
    """torch.backends.*.fp32_precision (the API torch >= 2.9 documents): reading the legacy
    allow_tf32 flags after it raises in torch, which made every kernel call raise; the
    kernels follow it (a fresh process: the API's state is sticky)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _NEW_TF32_API], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["linear_fwd=tf32", "conv_fwd=ieee"]
