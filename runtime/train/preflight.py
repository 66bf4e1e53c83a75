"""What a training run checks before any worker starts and before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from vggspec.compiler import Spec

from ..data.demo import demo_data_root
from ..dist.devices import check_device
from ..dist.memory_watch import cap_from_environment
from ..dist.resources import check_training
from ..io.rundir import model_file
from ..io.weights import read_metadata
from .config import ConfigError, TrainConfig
from .data import check_data_settings


def check_before_start(
    cfg: TrainConfig, spec: Spec, world: int, local: int, holds_lock: bool
) -> None:
    """Device and backend, spec, scale, batch split, data folder, init= and finetune= nets;
    then, in the process that holds the run folder, the graph's memory estimate for the
    `local` processes of this machine and a checkpoint's disk. (The memory actually taken
    is measured later, in each process, before its first step: train/memory_probe.py.)"""
    check_device(cfg.device, cfg.backend)
    cap_from_environment()  # a mistyped VGGSPEC_MEMORY_CAP now, not after the data and probe
    if cfg.precision == "fp64" and cfg.backend == "triton":
        raise ConfigError("precision=fp64 runs on the torch backend: give backend=torch or auto")
    _check_workers(cfg.workers)
    check_data_settings(cfg, spec, world)
    _check_out_outside_data(cfg)
    for source in (cfg.init, cfg.finetune):  # a vggspec net there; whether it fits comes later
        if source is not None and source not in ("gaussian", "glorot"):
            read_metadata(model_file(source))
    if holds_lock:
        check_training(
            spec,
            cfg.batch_size // world,
            local,
            cfg.device,
            cfg.out,
            cfg.momentum > 0,
            precision=cfg.precision,
        )


def _check_out_outside_data(cfg: TrainConfig) -> None:
    """A run folder in what the run reads (its train/ or val/ images, the box annotations, or
    the data root itself) would be read as data (its files a class), and the data's files
    taken for a run's. Beside them under a user's root (ROOT/runs/…) is no harm; the built-in
    demo data's folder is vggspec's, written whole: nothing else goes in it."""
    root = Path(cfg.data) if cfg.data is not None else demo_data_root(cfg.seed)
    out, root = Path(cfg.out).resolve(), root.resolve()
    read = [root / "train", root / "val", root / "annotations"] if cfg.data else [root]
    if cfg.boxes:
        read += [Path(cfg.boxes.replace("{split}", s)).resolve() for s in ("train", "val")]
    if out == root or any(out == r or r in out.parents for r in read):
        what = f"data={root}" if cfg.data is not None else f"the built-in demo data ({root})"
        raise ConfigError(f"out={cfg.out} is inside {what}: name a folder outside it")


# Loader processes per training process beyond this many per core only take memory (each
# holds its prefetched batches) and time to start; the paper's recipe asks for 8.
WORKERS_PER_CORE = 8


def _check_workers(workers: int) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limit = WORKERS_PER_CORE * (cores or 1)
    if workers > limit:
        raise ConfigError(
            f"workers={workers}: more data-loading processes than {limit} "
            f"({WORKERS_PER_CORE} per core, {cores or 1} cores here); give workers={cores or 1} "
            "or so"
        )
