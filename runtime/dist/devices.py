"""Whether the device and backend a job asks for exist on this machine, checked before any work."""

from __future__ import annotations

import os
import sys

from vggspec.compiler.errors import VggspecError


class DeviceError(VggspecError):
    """A device or backend this machine does not have."""


def check_device(
    device: str, backend: str, names: tuple[str, str] = ("device=", "backend=")
) -> None:
    """Raise DeviceError (one line, what to use instead) for device cuda without a usable
    CUDA, or backend triton without a GPU, unless Triton's interpreter was chosen
    (TRITON_INTERPRET=1, before triton is imported), which runs with a warning. `names`: how
    the command spells the two settings ("device=" or "--device ")."""
    import torch

    device_is, backend_is = names
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        why = (
            f"this torch ({torch.__version__}) is built without CUDA"
            if torch.version.cuda is None
            else "no CUDA GPU is visible to it"
        )
        raise DeviceError(f"{device_is}cuda: {why}; use {device_is}cpu (or auto)")
    if backend == "triton" and not (has_cuda and device != "cpu"):
        if os.environ.get("TRITON_INTERPRET") == "1":
            print(
                f"vggspec: warning: {backend_is}triton without a GPU runs Triton's interpreter "
                "(TRITON_INTERPRET=1): for testing the kernels, hundreds of times slower",
                file=sys.stderr,
                flush=True,
            )
            return
        raise DeviceError(
            f"{backend_is}triton needs a CUDA GPU and {'none is here' if not has_cuda else 'the device is the CPU'}; "
            f"use {backend_is}torch (or auto), or set TRITON_INTERPRET=1 to run the kernels in "
            "Triton's interpreter, which is for testing (hundreds of times slower)"
        )
