"""What a training run checks before any worker starts and before anything is written."""

from __future__ import annotations

from vggspec.compiler import Spec

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
    check_data_settings(cfg, spec, world)
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
