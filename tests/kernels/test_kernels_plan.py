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
