"""The paper's training recipe (Sect. 3.1), on one process or many (Sect. 3.3).

How to run it (through the `vggspec` command, which calls `run_training` below):

    vggspec run train                                    # demo spec on built-in demo data
    vggspec run train spec=specs/A.vgg data=DIR out=runs/a max_steps=100
    vggspec run train --config specs/paper.yaml spec=specs/D.vgg data=DIR
    vggspec run train --nproc 2 ...                      # 2 local processes via torchrun
    vggspec run train --resume runs/a                    # continue exactly where it stopped
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
        -m vggspec run train spec=... data=... out=...     # several machines

Rank 0 logs and writes checkpoints; every rank computes the same learning-rate and
stopping decisions from all-reduced figures, so no state lives on one rank only.
"""

from __future__ import annotations

import errno
import gc
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from vggspec.compiler import Spec
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.lowering.net import GlobalBatch, build, check_num_classes

from ..data.loader import make_loader
from ..dist import context as distributed
from ..dist.memory_watch import MemoryWatch
from ..io import checkpoint as checkpoints
from ..io import replace
from ..io.atomic import atomic_write
from ..io.model_info import KEY as INFO_KEY
from ..io.rundir import RunDir, model_file
from ..io.weights import load, load_state, save, weight_layers
from . import faults
from .claim import check_fresh
from .config import ConfigError, TrainConfig
from .data import prepare_training_data
from .log import RunLog
from .loss_reads import LossReads
from .memory_probe import check_step_memory, memory_cap, memory_cap_origin, memory_floor
from .sampler import EpochBatchSampler
from .schedule import make_schedule
from .settings import record as record_settings
from .tasks import training_task


class TrainingDiverged(VggspecError):
    """The loss became NaN or infinite; every rank stops at the same step."""


@dataclass
class Position:
    """Where training stands; with the weights and optimizer, all a resume needs."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    images: int = 0
    train_seconds: float = 0.0  # steady-state time: the first step of each start is not counted
    timed_images: int = 0  # the images of the steps counted in train_seconds
    wall_seconds: float = 0.0
    best_top1_error: float | None = None
    best_loc_error: float | None = None  # a box head's: protocol 1's GT-class error
    best_step: int | None = None  # of the best validation (the net in best.pt)
    last_val: dict = field(default_factory=dict)


def step_seed(seed: int, step: int) -> int:
    """Dropout's random stream for one step of the global batch: derived, so that nothing
    about it needs saving for an exact resume, and the same on every rank (each keeps its
    own rows of the masks, see GlobalBatch)."""
    return int(np.random.SeedSequence([seed, step, 2]).generate_state(1)[0] >> 1)


def check_same_classes(cfg: TrainConfig, state: dict, info) -> None:
    """A resumed run's data must name the classes its outputs were trained on, in that order:
    a class folder renamed, added or removed since would move labels to other outputs."""
    recorded = state.get(INFO_KEY, {}).get("class_names")
    now = list(info.class_names)
    if recorded is None or list(recorded) == now:
        return
    gone, new = sorted(set(recorded) - set(now)), sorted(set(now) - set(recorded))
    change = "; ".join(
        f"{what}: {', '.join(names[:5])}{', …' if len(names) > 5 else ''}"
        for what, names in (("gone", gone), ("new", new))
        if names
    )
    raise ConfigError(
        f"{cfg.data or 'the built-in demo data'}: its classes changed since the run started "
        f"({change or 'the same names, another order'}): a resume would train its outputs on "
        "other classes; restore the folder, or start a new run"
    )


class Trainer:
    def __init__(
        self, cfg: TrainConfig, spec: Spec, run: RunDir, ctx, log: RunLog, resume: dict | None
    ):
        self.cfg, self.rundir, self.ctx, self.log = cfg, run, ctx, log
        self.data = prepare_training_data(cfg, spec, ctx, log)
        self.info = self.data.model_info()  # saved with the weights and in checkpoints
        if resume is not None:
            check_same_classes(cfg, resume, self.info)
        classes = self.data.num_classes
        check_num_classes(spec, classes)
        # What the head's task reads, validates and selects by (a box head: protocol 1).
        self.task = training_task(spec)
        self.objective = self.task.objective
        # Measured before it is trusted: refuses a batch that cannot fit (memory_probe.py).
        self.memory = check_step_memory(cfg, spec, classes, ctx, log)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        init = cfg.init if cfg.init in ("gaussian", "glorot") else "gaussian"
        self.net = build(spec, cfg.backend, classes, init, cfg.dropout, Path(cfg.spec).stem)
        self.dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
        self.net.to(ctx.device, self.dtype)
        self.channels_last = cfg.uses_channels_last(ctx.device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        how = "set" if cfg.channels_last is not None else f"default for {cfg.precision}"
        layout = "NHWC (channels_last)" if self.channels_last else "NCHW"
        self.log.info(f"activations and conv weights {layout}: {how} on {ctx.device.type}")
        if cfg.finetune_layers == "fc":
            self._freeze_all_but_fc()
        trained = [t for t in self.net.parameters() if t.requires_grad]
        self.optimizer = torch.optim.SGD(
            trained, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.schedule = make_schedule(cfg)
        self.position = Position()
        if resume is not None:
            self._restore(resume)
        else:
            self._initialise_from_elsewhere()
        try:
            self.sampler = EpochBatchSampler(
                len(self.data.train), cfg.batch_size, ctx.rank, ctx.world, cfg.seed
            )
        except ValueError as err:  # fewer usable images than a batch, or an uneven split
            raise ConfigError(f"batch_size={cfg.batch_size}: {err}") from None
        self.loader = make_loader(self.data.train, None, cfg.workers, batch_sampler=self.sampler)
        self._warm = False
        self.losses = LossReads()  # the loss and the NaN check, read every few steps
        self._last_loss = math.nan
        self.replaces: RunDir | None = None  # --overwrite: the run this one replaces
        self.stop = faults.StopRequest()
        self.stop.install()
        cap, floor = memory_cap(self.memory), memory_floor(self.memory)
        self.watch = None
        if cap is not None or floor is not None:
            self.watch = MemoryWatch(cap, self._memory_exceeded, floor)
        # Last, so that nothing after it can fail and leave DDP (which holds the process
        # group) to a half-made trainer: see `release`.
        self.model = self.net
        # BN's statistics over the global batch: summed across processes, with gradients.
        self.sum_across = None
        if ctx.distributed:
            self.sum_across = distributed.sum_across
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
            )

    # -- set-up ---------------------------------------------------------------------------

    def _freeze_all_but_fc(self) -> None:
        """finetune_layers=fc: only the first two FC layers and the last one train."""
        fcs = weight_layers(self.net)["classifier"]
        trained = {name for group in fcs[:2] + fcs[-1:] for name in group}
        for name, _ in self.net.layers():
            if name not in trained:
                for tensor in getattr(self.net, name, torch.nn.Module()).parameters():
                    tensor.requires_grad_(False)
        self.log.info(f"training {', '.join(sorted(trained))} only (finetune_layers=fc)")

    def _memory_exceeded(self, why: str) -> None:
        """From the watch's thread: stop at the end of this step, with a checkpoint."""
        self.stop.request(f"memory: {why}{memory_cap_origin()}")

    def _initialise_from_elsewhere(self) -> None:
        cfg = self.cfg
        if cfg.init not in ("gaussian", "glorot"):
            source = load(model_file(cfg.init), "torch").to(self.ctx.device)
            copied, why = self.task.start_from(self.net, source)
            self.log.info(f"initialised {', '.join(copied)} from {cfg.init} ({why})")
        elif (note := self.task.random_start()) is not None:
            self.log.info(note)
        if cfg.finetune:
            weights = model_file(cfg.finetune)  # a run folder's model or last checkpoint
            source = load(weights, "torch")
            load_state(self.net, source.state_dict(), cfg.finetune)
            self.log.info(f"initialised all layers from {weights} (finetune=) at lr {cfg.lr:g}")

    def _restore(self, state: dict) -> None:
        # Names and shapes checked first: a last.pt of another spec's run is one line.
        load_state(self.net, state["model"], str(self.rundir.last))
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.position = Position(**state["position"])
        torch.set_rng_state(state["rng"])
        p = self.position
        self.log.info(f"resumed at step {p.step} (epoch {p.epoch + 1}, batch {p.step_in_epoch})")

    # -- checkpoints ----------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "format": checkpoints.FORMAT,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "position": self.position.__dict__.copy(),
            "rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
            "spec": self.net.spec_text(),
            INFO_KEY: self.info.to_metadata(),
        }

    def checkpoint(self, best: bool = False) -> None:
        if not self.ctx.is_main:
            return
        step = self.position.step
        state = self._state()
        last = self.rundir.last

        def fault_hook():
            faults.kill_if_planned("kill-in-checkpoint", step, self.ctx.rank)
            faults.fail_if_planned("enospc-in-checkpoint", step, self.ctx.rank, last)

        checkpoints.save_checkpoint(state, last, fault_hook)
        if best:
            checkpoints.save_checkpoint(state, self.rundir.best)
        if self.replaces is not None:  # the first checkpoint of an --overwrite
            faults.kill_if_planned("kill-before-swap", step, self.ctx.rank)
            replace.swap_in(
                self.rundir,
                self.replaces,
                lambda: faults.kill_if_planned("kill-in-swap", step, self.ctx.rank),
            )
            self.rundir, self.replaces = self.replaces, None
            self.log.info(f"the previous run in {self.rundir} is replaced by this one")

    # -- the loop -------------------------------------------------------------------------

    def total_steps(self) -> int:
        total = self.cfg.epochs * self.sampler.steps_per_epoch
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def run(self) -> dict:
        cfg, ctx, p = self.cfg, self.ctx, self.position
        started = time.perf_counter()
        wall_before = p.wall_seconds
        total = self.total_steps()
        self.log.start_progress(total, p.step)
        if self.watch is not None:
            self.watch.start()
        while p.step < total and p.epoch < cfg.epochs:
            self.sampler.set_epoch(p.epoch, p.step_in_epoch)
            self.data.train.set_epoch(p.epoch)
            outcome = self._epoch(total)  # "running", or "stopped" by a signal
            p.wall_seconds = wall_before + time.perf_counter() - started
            if outcome == "stopped" and self.replaces is not None:
                # An --overwrite stopped before its first checkpoint: a checkpoint now would
                # swap a barely started run in for the old one. The old run stays; claim.py
                # removes the staging folder.
                self.log.info(
                    f"{self.stop.signal_name}: stopped at step {p.step}, before this run's "
                    f"first checkpoint: the previous run in {self.replaces} stays, this one "
                    "is dropped"
                )
                return self.summary("stopped")
            if outcome == "stopped":
                self.checkpoint()
                self.log.info(
                    f"{self.stop.signal_name or 'another process stopped'}: checkpoint written "
                    f"at step {p.step}; continue with --resume {self.rundir}"
                )
                return self.summary("stopped")
            if p.step_in_epoch == self.sampler.steps_per_epoch:
                self._end_of_epoch()
        if not p.last_val or p.last_val.get("step") != p.step:
            best_before = self._best()
            result = self._record_validation()
            self.checkpoint(best=best_before is None or result[self.objective] < best_before)
        p.wall_seconds = wall_before + time.perf_counter() - started
        if ctx.is_main:
            faults.kill_if_planned("kill-in-final-save", p.step, ctx.rank)
            self._save_best()
        return self.summary("finished")

    def _save_best(self) -> None:
        """model.safetensors: the net of the best validation (best.pt), which is the net
        in hand when the last validation was the best."""
        p = self.position
        if p.best_step is not None and p.best_step != p.step:
            self.net.load_state_dict(checkpoints.load_checkpoint(self.rundir.best)["model"])
        save(self.net, self.rundir.model, self.info)
        step = p.step if p.best_step is None else p.best_step
        epochs = step / self.sampler.steps_per_epoch
        shown = f"{epochs:g}" if epochs == int(epochs) else f"{epochs:.2f}"
        self.log.info(
            f"model.safetensors: the net of the best validation, after epoch {shown} "
            f"(step {step}, {self.task.what} {self._best():.2%})"
        )

    def _epoch(self, total: int) -> str:
        cfg, ctx, p = self.cfg, self.ctx, self.position
        self.model.train()
        tick = time.perf_counter()
        for x, y in self.loader:
            faults.kill_if_planned("kill", p.step + 1, ctx.rank)
            x = x.to(ctx.device, self.dtype, non_blocking=True)
            y = y.to(ctx.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            seed = step_seed(cfg.seed, p.step)
            torch.manual_seed(seed)
            rows = GlobalBatch(seed, ctx.rank * len(y), cfg.batch_size, self.sum_across)
            with torch.autocast(ctx.device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
                logits = self.model(x, batch=rows)
            loss = self.net.loss(logits, y)
            if faults.fires("nan", p.step + 1, ctx.rank):
                loss = loss * float("nan")
            self.losses.add(loss, p.step + 1)
            stop = False
            if self._read_due(p.step + 1, total):  # else no host synchronisation this step
                read = self.losses.read(ctx, self.stop.requested)
                self._check_finite(read, p.step + 1)
                self._last_loss, stop = read.loss, read.stop
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.schedule.per_step:
                self.schedule.lr = self.schedule.at(p.step, total)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.schedule.lr
            self.optimizer.step()
            p.step += 1
            p.step_in_epoch += 1
            p.images += cfg.batch_size
            now = time.perf_counter()
            if self._warm:  # the first step also starts workers and allocators: not timed
                p.train_seconds += now - tick
                p.timed_images += cfg.batch_size
            self._warm = True
            tick = now
            # The global batch's loss at the last read: this step's on every step that
            # writes a log row.
            self.log.step(p, self._last_loss, self.schedule.lr, cfg.log_every)
            if stop:
                return "stopped"
            if (
                p.step % cfg.checkpoint_every == 0
                and p.step_in_epoch < self.sampler.steps_per_epoch
            ):
                self.checkpoint()
            if p.step >= total:
                break
            tick = time.perf_counter()
        return "running"

    def _read_due(self, step: int, total: int) -> bool:
        """Read the loss at this step? Every log_every steps, and before whatever must not
        see a diverged net or must agree across ranks: a checkpoint, the end of an epoch
        (validation), the last step; one process also reads as soon as it is asked to stop."""
        cfg = self.cfg
        return (
            step % cfg.log_every == 0
            or step % cfg.checkpoint_every == 0
            or self.position.step_in_epoch + 1 == self.sampler.steps_per_epoch
            or step >= total
            or (not self.ctx.distributed and self.stop.requested)
        )

    def _check_finite(self, read, step: int) -> None:
        if read.first_bad_step is None:
            return
        seen = "" if read.first_bad_step == step else f", seen at step {step}"
        raise TrainingDiverged(
            f"the loss became non-finite at step {read.first_bad_step} (on {read.bad_ranks} "
            f"of {self.ctx.world} processes){seen}; stopped without touching the last "
            f"checkpoint in {self.rundir.checkpoints}. Try a lower lr or init=glorot."
        )

    def _record_validation(self) -> dict:
        p = self.position
        faults.kill_if_planned("kill-in-validation", p.step, self.ctx.rank)
        result = self.task.validate(
            self.net, self.data, self.ctx, self.sampler.local_batch, self.cfg.workers
        )
        result.update(step=p.step, epoch=p.epoch, lr=self.schedule.lr)
        p.last_val = result
        best = self._best()
        if best is None or result[self.objective] < best:
            self._set_best(result[self.objective])
        self.log.epoch(result)
        return result

    def _best(self) -> float | None:
        return getattr(self.position, self.task.best)

    def _set_best(self, value: float) -> None:
        self.position.best_step = self.position.step
        setattr(self.position, self.task.best, value)

    def _end_of_epoch(self) -> None:
        p = self.position
        p.epoch += 1
        p.step_in_epoch = 0
        best_before = self._best()
        result = self._record_validation()
        if self.schedule.step(1.0 - result[self.objective]):
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.lr
            self.log.info(
                f"validation accuracy stopped improving: lr → {self.schedule.lr:g} "
                f"(drop {self.schedule.drops} of {self.schedule.max_drops})"
            )
        improved = best_before is None or result[self.objective] < best_before
        self.checkpoint(best=improved)

    def release(self) -> None:
        """Let go of what outlives a run unless told: DDP (its reducer holds the process
        group) and the loader's persistent worker processes. The process group is destroyed
        after this; one still held by DDP is torn down at interpreter exit instead, where
        gloo can abort the process ("terminate called without an active exception", seen
        once in CI on a finished 2-process run)."""
        self.model = self.net
        self.loader = None  # the DataLoader's iterator stops its workers as it goes
        if self.watch is not None:
            self.watch.stop()
        gc.collect()

    def summary(self, outcome: str) -> dict:
        p = self.position
        val = p.last_val
        return {
            "outcome": outcome,
            "spec": self.cfg.spec,
            "steps": p.step,
            "epochs": p.step / self.sampler.steps_per_epoch,
            "images": p.images,
            "processes": self.ctx.world,
            "wall_seconds": round(p.wall_seconds, 3),
            "train_seconds": round(p.train_seconds, 3),
            "images_per_second": round(p.timed_images / p.train_seconds, 2)
            if p.train_seconds
            else 0.0,
            "val_top1_error": val.get("val_top1_error"),
            "val_top5_error": val.get("val_top5_error"),
            "val_loss": val.get("val_loss"),
            "best_val_top1_error": p.best_top1_error,
            "best_step": p.best_step,
            **self.task.summary(p, val),
            "lr": self.schedule.lr,
            "lr_drops": self.schedule.drops,
            "bad_files": self.data.bad_files,
            **({"stopped_by": self.stop.signal_name} if outcome == "stopped" else {}),
        }


def check_not_past(cfg: TrainConfig, state: dict, run: RunDir) -> None:
    """A resume's max_steps or epochs below where the run stands would train nothing and
    record the smaller figure in settings.json beside a summary of more steps: refused. So is
    one that raises one of them where the other has ended the run (it said "finished" as if
    it had trained, and recorded the figure)."""
    position, before = state["position"], state.get("config", {})
    step, begun = position["step"], position["epoch"] + (position["step_in_epoch"] > 0)
    if cfg.max_steps and cfg.max_steps < step:
        raise ConfigError(
            f"{run} stands at step {step}: max_steps={cfg.max_steps} would end it before "
            f"that; give max_steps={step} or more"
        )
    if cfg.epochs < begun:
        raise ConfigError(
            f"{run} stands in epoch {begun}: epochs={cfg.epochs} would end it before that; "
            f"give epochs={begun} or more"
        )
    raised = cfg.max_steps != before.get("max_steps")
    if raised and cfg.max_steps and cfg.max_steps > step and position["epoch"] >= cfg.epochs:
        per_epoch = step // position["epoch"] if position["epoch"] else 0
        needed = -(-cfg.max_steps // per_epoch) if per_epoch else cfg.epochs + 1
        raise ConfigError(
            f"{run} has trained its epochs={cfg.epochs} (step {step}): "
            f"max_steps={cfg.max_steps} would train nothing more; give epochs={needed} too"
        )
    steps_done = bool(cfg.max_steps) and step >= cfg.max_steps
    if cfg.epochs > begun and steps_done and cfg.epochs != before.get("epochs"):
        raise ConfigError(
            f"{run} has trained its max_steps={cfg.max_steps}: epochs={cfg.epochs} would "
            "train nothing more; give a larger max_steps too"
        )


def run_training(
    cfg: TrainConfig, spec: Spec, resume: bool = False, staging: str | None = None
) -> dict | None:
    """Train (or resume) the net `spec` (`cfg.spec`, parsed once by the caller) in the run
    folder `cfg.out`; rank 0 writes summary.json and returns it (the other ranks return
    None). With `staging` (--overwrite, see claim.py), train there until the first
    checkpoint, then take `cfg.out`'s place."""
    ctx = distributed.setup(cfg.device)
    try:
        run = replaces = RunDir(cfg.out)
        if staging is None or replace.swapped(run, RunDir(staging)):
            replaces = None
        else:
            run = RunDir(staging)
        state = None
        # A worker that torchrun restarted picks up from the last checkpoint by itself.
        if (resume or distributed.restart_count() > 0) and run.last.exists():
            state = checkpoints.load_checkpoint(run.last)
        elif resume:
            raise ConfigError(f"{run}: nothing to resume (no {RunDir.LAST})")
        if state is not None:
            check_not_past(cfg, state, run)
        elif ctx.is_main:
            check_fresh(run)
        distributed.barrier(ctx)
        log = RunLog(run, ctx.is_main, truncate_after=state["position"]["step"] if state else 0)
        log.info(
            f"run {cfg.out}"
            + (f" (in {run} until its first checkpoint)" if replaces else "")
            + f": {cfg.spec}, {ctx.world} process(es) on {ctx.device.type}, "
            f"global batch {cfg.batch_size}"
        )
        # Every check (data, classes, bad files, init= and finetune= weights, memory) is
        # made in here, before anything is written: a refused run leaves no files.
        trainer = Trainer(cfg, spec, run, ctx, log, state)
        try:
            if ctx.is_main:
                run.path.mkdir(parents=True, exist_ok=True)
                run.remove_leftovers()  # of an earlier start killed mid-write
                record_settings(cfg, spec, run)
                log.open()
            trainer.replaces = replaces
            summary = trainer.run()
            if ctx.is_main and trainer.replaces is None:  # else a dropped --overwrite's staging
                text = json.dumps(summary, indent=2) + "\n"
                atomic_write(trainer.rundir.summary, lambda tmp: Path(tmp).write_text(text))
            log.close()
        except BaseException as err:
            # The frames the error went through (DDP's forward among them) would keep DDP
            # alive past the process group's teardown.
            traceback.clear_frames(err.__traceback__)
            trainer.release()
            if isinstance(err, TrainingDiverged):  # every rank stops at the same step
                distributed.barrier(ctx)
            raise
        trainer.release()
        distributed.barrier(ctx)  # leave together: gloo aborts a process whose peer is gone
        if ctx.is_main and summary.get("stopped_by", "").startswith("memory"):
            raise OSError(
                errno.ENOMEM,
                f"{summary['stopped_by']}: stopped at step {summary['steps']} with a "
                f"checkpoint; continue with --resume {trainer.rundir} once there is room",
            )
        return summary if ctx.is_main else None
    finally:
        distributed.teardown()
