"""Per-layer choice between a Triton kernel and the torch reference, by measurement.

The unit measured is one backend call as the net makes it: a fused conv + bias + ReLU,
a linear layer, a pool, …, forward only ("fwd") or forward and backward ("fwd+bwd")
when gradients are wanted. The Triton side's autograd function owns its forward, data
and weight gradients together, so a layer runs all three on one side; timing them as
one call measures exactly what the choice decides.

On first use of a signature (GPU, torch, triton and kernel versions, call and shapes,
dtype, pass) both sides run once, each followed by a device synchronisation inside a guard,
their outputs and gradients are compared within the dtype's tolerance, then each is timed
`reps` times and the faster kept. A Triton side that raises (at launch or, asynchronously,
at the synchronisation) or disagrees is never chosen: one warning line, torch for that
signature, and the reason cached with it (retried when a version changes). The decision
goes to a JSON file (see autotune_cache) and is reused by later processes. Under
torch.distributed rank 0 decides training calls and broadcasts its choice, so every rank
runs the same code; whatever goes wrong on rank 0 is broadcast as torch, so no rank
waits. Forward-only calls (evaluation, where ranks hold different images and so meet
different signatures) cannot ask rank 0 — a collective there could pair one rank's
question with another's, or wait for a rank that never asks — so no rank measures them:
each takes what the cache file already holds, else torch, the same on every rank.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable

import torch

from ..errors import VggspecError
from .autotune_cache import DecisionCache

log = logging.getLogger("vggspec.autotune")

# max|a - b| / max|b| (the kernel tests' measure) allowed between the two sides, by the
# precision the call computes in. fp32 is the interpreter's (and a GPU's without TF32);
# TF32 rounds operands to 10 mantissa bits, bf16 to 7 and rounds the output too.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 2e-2, "fp16": 5e-3}

SIDES = ("triton", "torch")

# Dense evaluation of images of many sizes meets a new signature per size; past this many
# measurements a process stops measuring and runs new signatures through torch.
MAX_MEASUREMENTS = 256

Timer = Callable[[str, Callable[[], object]], float]

# Set to "triton" or "torch", `auto` runs its own logic where it otherwise would not (without
# CUDA; Triton then runs in its interpreter) and its default timer is stand_in_timer(that
# side): the tests and gpu-check's dry run use it. Both sides still run and are compared.
STAND_IN_ENV = "VGGSPEC_AUTO_STAND_IN"


def stand_in_side() -> str | None:
    """The side VGGSPEC_AUTO_STAND_IN names, or None when it is unset."""
    side = os.environ.get(STAND_IN_ENV, "")
    if not side:
        return None
    if side not in SIDES:
        raise VggspecError(f"{STAND_IN_ENV}={side!r}: choose triton or torch")
    return side


def stand_in_timer(winner: str) -> Timer:
    """A deterministic stand-in for wall_clock_ms: `winner` takes 1 ms, the other side 2.
    It runs nothing: the trial has already run both sides and compared them."""

    def timer(side: str, fn: Callable[[], object]) -> float:
        return 1.0 if side == winner else 2.0

    return timer


def default_timer() -> Timer:
    """wall_clock_ms, or the stand-in VGGSPEC_AUTO_STAND_IN asks for."""
    side = stand_in_side()
    return stand_in_timer(side) if side is not None else wall_clock_ms()


def wall_clock_ms(reps: int = 5) -> Timer:
    """Median milliseconds of `reps` runs, synchronising CUDA around each."""

    def timer(side: str, fn: Callable[[], object]) -> float:
        times = []
        for _ in range(reps):
            _synchronize()
            start = time.perf_counter()
            fn()
            _synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return timer


def _synchronize(device: torch.device | None = None) -> None:
    """Wait for the GPU, so that a kernel's asynchronous fault is raised here."""
    if device is not None and device.type != "cuda":
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)


def _run_synchronised(fn: Callable[[], list[torch.Tensor]], device) -> list[torch.Tensor]:
    out = fn()
    _synchronize(device)
    return out


def current_environment(device: torch.device) -> dict:
    """What a measurement depends on besides the call: the GPU, torch's and triton's
    versions and the kernels' own (a hash of their sources and config tables)."""
    from ..kernels.version import kernels_version

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton_version,
        "kernels": kernels_version(),
    }


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|a - b| / max|b| over the reference's finite entries; inf when the shapes,
    or the places of NaN and inf, differ."""
    if actual.shape != expected.shape:
        return float("inf")
    a, b = actual.detach().double(), expected.detach().double()
    if not torch.equal(torch.isnan(a), torch.isnan(b)) or not torch.equal(
        torch.isinf(a), torch.isinf(b)
    ):
        return float("inf")
    finite = torch.isfinite(b)
    if not finite.any():
        return 0.0
    diff = (a - b)[finite].abs().max().item()
    scale = b[finite].abs().max().item()
    return diff / scale if scale > 0 else diff


class Autotuner:
    """Chooses a side per call signature and remembers it (in memory and on disk).

    `timer(side, fn)` gives the milliseconds of `fn` (tests inject one); `environment`
    overrides the GPU and version fields of the key (tests use it to change versions).
    """

    def __init__(
        self,
        cache: DecisionCache | None = None,
        timer: Timer | None = None,
        environment: dict | None = None,
        max_measurements: int = MAX_MEASUREMENTS,
    ):
        self.cache = cache if cache is not None else DecisionCache()
        self.timer = timer or default_timer()
        self.environment = environment
        self.max_measurements = max_measurements
        self.chosen: dict[str, str] = {}
        self.measured = 0  # signatures this process measured (the tests count them)

    def choose(
        self,
        signature: str,
        precision: str,
        device: torch.device,
        sides: dict[str, Callable[[], list[torch.Tensor]]],
        shared: bool = False,
    ) -> str:
        """The side ("triton" or "torch") for `signature`; `sides` run the call and return
        its outputs and gradients. `shared`: in a process group, take rank 0's choice;
        every rank must then ask for the same signatures in the same order (training
        steps do: the trainer splits each batch evenly)."""
        if signature in self.chosen:
            return self.chosen[signature]
        if shared and _distributed():
            import torch.distributed as dist

            box = [self._decide_or_torch(signature, precision, device, sides)]
            dist.broadcast_object_list(box, src=0)
            choice = box[0]
        elif _distributed():
            held = self.cache.lookup(self.environment or current_environment(device), signature)
            choice = held["choice"] if held is not None else "torch"
        else:
            choice = self._decide(signature, precision, device, sides)
        self.chosen[signature] = choice
        return choice

    def _decide_or_torch(self, signature, precision, device, sides) -> str | None:
        """Rank 0's decision; whatever goes wrong deciding is torch, so that the broadcast
        every other rank waits in always comes. Other ranks decide nothing (None)."""
        import torch.distributed as dist

        if dist.get_rank() != 0:
            return None
        try:
            return self._decide(signature, precision, device, sides)
        except Exception as err:
            self._fallback(signature, f"deciding failed: {type(err).__name__}: {err}")
            return "torch"

    def _decide(self, signature, precision, device, sides) -> str:
        env = self.environment or current_environment(device)
        held = self.cache.lookup(env, signature)
        if held is not None:
            return held["choice"]
        if self.measured >= self.max_measurements:
            if self.measured == self.max_measurements:
                self.measured += 1  # warn once
                log.warning(
                    "vggspec autotune: %d call signatures measured in this process; new "
                    "ones run through torch unmeasured",
                    self.max_measurements,
                )
            return "torch"
        decision = self.measure(signature, precision, sides, device)
        return self.cache.store(env, signature, decision)["choice"]

    def measure(self, signature: str, precision: str, sides, device=None) -> dict:
        """Run both sides (each synchronised inside the guard), compare, time; the
        decision record for the cache."""
        self.measured += 1
        try:
            reference = _run_synchronised(sides["torch"], device)
        except Exception as err:  # the call itself will raise it again, through torch
            return self._fallback(signature, f"torch failed: {type(err).__name__}: {err}")
        try:
            candidate = _run_synchronised(sides["triton"], device)
        except Exception as err:  # fails to compile or launch, or faults on the device
            return self._fallback(signature, f"triton failed: {type(err).__name__}: {err}")
        tol = TOLERANCE[precision]
        error = max(
            (relative_error(a, b) for a, b in zip(candidate, reference, strict=False)),
            default=0.0,
        )
        if len(candidate) != len(reference) or not error <= tol:
            return self._fallback(
                signature, f"triton disagrees with torch: error {error:.2e} > {tol:.0e}"
            )
        try:
            ms = {side: self.timer(side, sides[side]) for side in SIDES}
            _synchronize(device)
        except Exception as err:
            return self._fallback(signature, f"timing failed: {type(err).__name__}: {err}")
        choice = "triton" if ms["triton"] < ms["torch"] else "torch"
        return {"choice": choice, "error": error, **{f"{s}_ms": ms[s] for s in SIDES}}

    def _fallback(self, signature: str, why: str) -> dict:
        log.warning("vggspec autotune: %s uses torch: %s", signature, why.splitlines()[0])
        return {"choice": "torch", "why": why[:500]}


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_DEFAULT: Autotuner | None = None


def default_autotuner() -> Autotuner:
    """The process's tuner: one memory of choices for every net it builds."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Autotuner()
    return _DEFAULT
