"""Memory measured before it is trusted: training steps at two small batches, extrapolated.

The graph's estimate (dist/resources.py) is a floor: it leaves out the allocator's slack,
the kernels' workspaces and torch's own buffers, and a batch that passed it (config A at
256: 14.0 GiB estimated) grew past 20 GB and met the kernel's OOM killer. So before its
first real step each training process runs a throwaway copy of its net (same spec,
backend, precision, optimizer) for a warm-up step and then a step at each of two small
batches b1 < b2, measuring peaks: the resident set's high-water mark on the CPU
(/proc/self/status VmHWM, reset through /proc/self/clear_refs), the allocator's peak on a
GPU (torch.cuda.max_memory_allocated). A step has two peaks: forward and backward (the
weights, their gradients, the momentum and the activations, which grow with the batch),
and the optimizer's update (its temporaries the size of the weights, not of the batch),
which is the larger at small batches. Each is measured on its own; the line through the
two forward-and-backward peaks gives that peak at the per-process batch B, and the need
is the larger of it and the optimizer's, plus the data loader's batches in flight (each
worker prefetches 2 float32 batches). A job is refused when the processes of this machine
would need more than what is available less the margin.

The throwaway net, its random inputs (drawn under a forked RNG) and its optimizer are
dropped before the run's own net is built: the run's weights, its RNG streams and its BN
statistics are those of a run without the probe, bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from vggspec.compiler import Spec
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.ir.report import format_bytes as size_text
from vggspec.compiler.lowering.net import GlobalBatch, build, head_task

from ..dist import context as distributed
from ..dist.cpu_memory import available_bytes, freed_memory_returned, retaining, switch_on
from ..dist.memory_watch import CAP_SETTING, cap_from_environment, resident_bytes

# What a refused job must leave free on this machine: a tenth of what is available, and
# 0.5 GiB more (the loader's processes themselves, the checkpoint being written, the page
# cache the system needs); on a GPU, a tenth (the caching allocator's fragmentation).
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 1 << 29
PROBE_BATCH = 8  # b2 at most; b1 = b2 / 2
# A process that keeps freed memory (dist/cpu_memory.py) reuses it, but not perfectly: its
# heap ends up larger than the memory in use at any moment, by an amount that varies from
# run to run. For config A at batches 8..96 (bench/memory_probe.py, 2026-12-06) its
# resident set grew by about 0.07 GiB an image against 0.0485 for the memory in use, which
# the probe measures (glibc's defaults during its steps): its line's slope counts
# RETAINED_HEAP times, and the margin takes the rest (up to 0.9 GiB at small batches).
RETAINED_HEAP = 1.75
PREFETCH = 2  # batches each loader worker keeps ready (DataLoader's prefetch_factor)
PROBE_SWITCH = "VGGSPEC_MEMORY_PROBE"  # 0: no probe (the graph's estimate alone)


class NotEnoughMemory(VggspecError):
    """The measured memory of a training step, extrapolated to the batch, does not fit."""


@dataclass(frozen=True)
class MemoryProbe:
    """Peaks (bytes above what the process held before) of training steps at two batches."""

    batches: tuple[int, int]
    peaks: tuple[int, int]  # forward and backward, at each batch
    update: int  # the optimizer's step (its peak does not grow with the batch)
    loader: int  # bytes of the loader's batches in flight, per image of the batch
    available: int | None  # this machine's (or GPU's) available memory before the probe
    baseline: int  # what this process held before the probe (resident set or GPU allocated)
    on_gpu: bool
    retained: bool = False  # the process keeps freed memory (dist/cpu_memory.py)

    def need(self, batch: int) -> int:
        """The peak at `batch`: the line through the two forward-and-backward peaks, its
        slope (the activations) times RETAINED_HEAP when the process keeps freed memory, or
        the optimizer's peak if larger; with the loader's batches."""
        (b1, b2), (p1, p2) = self.batches, self.peaks
        slope = max(0.0, (p2 - p1) / (b2 - b1)) if b2 != b1 else 0.0
        fixed = p1 - slope * b1  # weights, gradients, momentum, torch's own
        growth = RETAINED_HEAP if self.retained else 1.0
        step = max(p2, fixed + growth * slope * batch) if batch >= b2 else p2
        return int(max(step, self.update)) + self.loader * batch

    @staticmethod
    def margin(available: int, on_gpu: bool) -> int:
        return int(available * MARGIN_FRACTION) + (0 if on_gpu else MARGIN_BYTES)


def probe_batches(batch: int) -> tuple[int, int]:
    """(b1, b2) for a per-process batch: at most PROBE_BATCH, the larger twice the smaller
    (the same when the batch itself is under 4: then it is measured, not extrapolated)."""
    b2 = min(batch, PROBE_BATCH)
    return (b2 // 2, b2) if b2 >= 4 else (b2, b2)


# -- measuring a peak -------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_high_water_mark() -> bool:
    """VmHWM back to the current resident set (Linux ≥ 4.0); False where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class _Peak:
    """The peak memory of what runs inside the block, in bytes above `baseline`."""

    def __init__(self, device: torch.device, baseline: int):
        self.device, self.baseline, self.bytes = device, baseline, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_high_water_mark()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = (_status_kib("VmHWM") or 0) * 1024
        self.bytes = max(0, peak - self.baseline)


def measurable(device: torch.device) -> bool:
    return device.type == "cuda" or (_reset_high_water_mark() and _status_kib("VmHWM") is not None)


# -- the probe -----------------------------------------------------------------------------


def _available(device: torch.device) -> int | None:
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        # Blocks torch's allocator holds but does not use are free to this process too.
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return available_bytes()


def _baseline(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return resident_bytes() or 0


def measure(cfg, spec: Spec, classes: int, batch: int, device: torch.device) -> MemoryProbe:
    """Train a throwaway net like the run's for a warm-up step and a step at each probe
    batch; see the module's docstring."""
    b1, b2 = probe_batches(batch)
    available = _available(device)
    baseline = _baseline(device)
    on_gpu = device.type == "cuda"
    with (
        torch.random.fork_rng(devices=[device] if on_gpu else []),
        freed_memory_returned(),  # the resident set follows the memory in use: no noise
    ):
        (p1, u1), (p2, u2) = _steps(cfg, spec, classes, device, (b1, b2), baseline)
    # The loader hands over float32 crops, held in host memory.
    image = 3 * spec.input.height * spec.input.width * 4
    loader = 0 if on_gpu else cfg.workers * PREFETCH * image
    retained = not on_gpu and retaining()
    return MemoryProbe(
        (b1, b2), (p1, p2), max(u1, u2), loader, available, baseline, on_gpu, retained
    )


def _steps(cfg, spec, classes, device, batches, baseline) -> list[tuple[int, int]]:
    """(forward-and-backward peak, update peak) of a step at each of `batches`, after a
    warm-up step; the net and its optimizer go when this returns."""
    height, width = spec.input.height, spec.input.width
    task = head_task(spec)
    dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
    net = build(spec, cfg.backend, classes, "gaussian", cfg.dropout).to(device, dtype)
    nhwc = cfg.uses_channels_last(device)  # as the run: null means on for bf16 and CUDA
    if nhwc:
        net.to(memory_format=torch.channels_last)
    net.train()
    optimizer = torch.optim.SGD(
        net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )

    def step(n: int) -> tuple[int, int]:
        x = torch.randn(n, 3, height, width, device=device, dtype=dtype)
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        y = task.random_target(n, classes, device, dtype)
        optimizer.zero_grad(set_to_none=True)
        with _Peak(device, baseline) as learning:
            with torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
                scores = net(x, batch=GlobalBatch(0, 0, n))
            net.loss(scores, y).backward()
            del scores
        with _Peak(device, baseline) as update:
            optimizer.step()
        return learning.bytes, update.bytes

    step(batches[0])  # allocates the momentum, warms the allocator and the kernels' caches
    return [step(n) for n in batches]


def check_step_memory(cfg, spec: Spec, classes: int, ctx, log) -> MemoryProbe | None:
    """Measure (in every process), then refuse with NotEnoughMemory when the processes of
    this machine, each at its share of the batch, would need more than is available less
    the margin. The processes decide together, on the largest need and the smallest room.
    None where the peak cannot be measured (no /proc): the graph's estimate stood alone."""
    device = ctx.device
    wanted = switch_on(PROBE_SWITCH)  # every process refuses a bad value alike, before waiting
    unmeasurable = distributed.all_reduce_sum([0.0 if measurable(device) else 1.0], ctx)[0]
    if unmeasurable or not wanted:
        return None
    batch = cfg.batch_size // ctx.world
    local = 1 if device.type == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    distributed.barrier(ctx)  # what is available is read before any process probes
    probe = measure(cfg, spec, classes, batch, device)
    room = probe.available if probe.available is not None else -1
    (b1, b2), (p1, p2) = probe.batches, probe.peaks
    step = probe.baseline + max(p2, probe.update)  # measured at b2 <= batch images
    need, least, step = distributed.all_reduce_max(
        [float(probe.need(batch)), -float(room), float(step)], ctx
    )
    need, available, step = int(need), (None if least == 1 else int(-least)), int(step)
    log.info(
        f"memory: forward and backward took {size_text(p1)} at {b1} images and "
        f"{size_text(p2)} at {b2}, the update {size_text(probe.update)}: "
        f"{size_text(need)} per process at {batch}, the loader's batches included"
        + (f"; {size_text(available)} available" if available is not None else "")
    )
    probe = dataclasses.replace(probe, available=available)  # the figure all agreed on
    cap = cap_from_environment()
    if cap and cap < step:  # the watch would stop the run at its first step
        raise NotEnoughMemory(
            f"{CAP_SETTING}={os.environ[CAP_SETTING].strip()} is below what a training step of "
            f"this run was measured to hold ({size_text(step)} at {b2} images, with what the "
            "process held before): the run would stop at its first step; raise it, or set "
            "0 for no cap"
        )
    if available is None:
        return probe
    margin = MemoryProbe.margin(available, probe.on_gpu)
    if need * local > available - margin:
        where = "is free on the GPU" if probe.on_gpu else "of RAM is available"
        each = f" for {local} processes" if local > 1 else ""
        # What the machine has moves from one minute to the next (other processes): the
        # batch named leaves 5 % more, rounded down to a multiple of 8 per process.
        fits = largest_batch(probe, local, int(0.95 * available) - margin) * ctx.world
        if fits >= 16:
            fits -= fits % (8 * ctx.world)
        raise NotEnoughMemory(
            f"not enough memory: a training step at {batch} images per process needs "
            f"{size_text(need * local)}{each} (forward and backward measured at "
            f"{size_text(p1)} for {b1} images and {size_text(p2)} for {b2}, extrapolated) "
            f"but only {size_text(available)} {where}, "
            f"less a margin of {size_text(margin)}; "
            + (f"try batch_size={fits} or less" if fits else "try a smaller spec")
            + (" or fewer --nproc" if local > 1 else "")
        )
    return probe


def largest_batch(probe: MemoryProbe, local: int, room: int) -> int:
    """The largest per-process batch whose need, times the local processes, fits `room`."""
    fits = lambda batch: probe.need(batch) * local <= room  # noqa: E731
    low, high = 0, 1
    while fits(high) and high < 1 << 24:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def memory_cap(probe: MemoryProbe | None) -> int | None:
    """The resident set past which a training process stops itself (dist/memory_watch.py):
    VGGSPEC_MEMORY_CAP if set (0: none), else, on the CPU, what the process held before
    the probe plus its share of what was available then, less half the margin (so that it
    stops while the machine has room for the checkpoint). None: no cap."""
    chosen = cap_from_environment()
    if chosen is not None:
        return chosen or None
    if probe is None or probe.on_gpu or probe.available is None:
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    room = probe.available - MemoryProbe.margin(probe.available, False) // 2
    return probe.baseline + room // local


def memory_floor(probe: MemoryProbe | None) -> int | None:
    """The machine's available memory under which a training process stops itself: a
    quarter of the margin, on the CPU, unless VGGSPEC_MEMORY_CAP=0 turned the watch off."""
    if cap_from_environment() == 0 or probe is None or probe.on_gpu or probe.available is None:
        return None
    return MemoryProbe.margin(probe.available, False) // 4


def memory_cap_origin() -> str:
    """Where the cap came from, for the message: the setting's name, or nothing."""
    return f" ({CAP_SETTING})" if cap_from_environment() else ""
