"""`vggspec run train`: configs, the run folder, exact data parallelism, resume and faults."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, vggspec_cmd
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.io.checkpoint import load_checkpoint

import vggspec

TINY_SPEC = "input 32x32 RGB\nconv3-8 maxpool\nconv3-16 maxpool\nFC-32 FC-32 FC-10 soft-max\n"
# 60 training images, batch 8: 7 steps per epoch; 25 validation images (odd on purpose).
BASE = [
    "batch_size=8",
    "scale=[36,44]",
    "workers=0",
    "log_every=1",
    "init=glorot",
    "lr=0.001",
    "checkpoint_every=3",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_demo_dataset(root / "data", seed=3, train_per_class=6, val_per_class=3)
    # Keep 25 validation images: a count that does not divide by two processes.
    for path in sorted((root / "data" / "val").rglob("*.jpg"))[25:]:
        path.unlink()
    (root / "tiny.vgg").write_text(TINY_SPEC)
    return root


def settings(tiny: Path, out: Path, *extra: str) -> list[str]:
    return [f"spec={tiny / 'tiny.vgg'}", f"data={tiny / 'data'}", f"out={out}", *BASE, *extra]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vggspec.load(run / "model.safetensors", backend="torch").state_dict()


def max_rel_diff(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a)


def _centre_crop_validation(run: Path, data: Path) -> tuple[tuple[float, float], float]:
    """(top-1, top-5) error and mean loss of a run's net on the centre crops of data/val at
    its single scale, computed without the trainer."""
    from vggspec.runtime.data.image_folder import scan_image_folder
    from vggspec.runtime.data.validation import CenterCropDataset

    info = vggspec.model_info(run)
    net = vggspec.load(run / "model.safetensors", backend="torch").eval()
    train = scan_image_folder(data, "train")
    val = CenterCropDataset(
        scan_image_folder(data, "val", classes=train.classes),
        scale=info.train_scale,
        crop=info.input_size,
        preprocessing=info.preprocessing,
    )
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        logits = net(x).float()
    top5 = logits.topk(5, dim=1).indices
    n = len(y)
    top1_error = 1 - int((top5[:, 0] == y).sum()) / n
    top5_error = 1 - int((top5 == y[:, None]).any(dim=1).sum()) / n
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    return (top1_error, top5_error), loss


def _step_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "step"]


def test_single_process_run_folder(tiny, tmp_path, cli):
    out = tmp_path / "run"
    code, stdout, _ = cli("run", "train", *settings(tiny, out, "max_steps=10"))
    assert code == 0
    assert "finished: 10 steps" in stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("steps", "wall_seconds", "images_per_second", "val_top1_error", "val_top5_error"):
        assert summary[key] is not None, key
    assert summary["steps"] == 10 and summary["images"] == 80
    # steady state: the first step (workers, allocators) is not timed
    assert summary["images_per_second"] == pytest.approx(72 / summary["train_seconds"], rel=0.01)
    assert summary["wall_seconds"] >= summary["train_seconds"]
    # validation of the saved net (the best one), recomputed here from it and its model
    # information
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [7, 10]  # the epoch's end, and the last step
    best = min(vals, key=lambda r: r["val_top1_error"])  # the first of equals
    assert summary["best_step"] == best["step"]
    assert summary["best_val_top1_error"] == best["val_top1_error"]
    assert summary["val_top1_error"] == vals[-1]["val_top1_error"]
    errors, loss = _centre_crop_validation(out, tiny / "data")
    assert best["val_top1_error"] == errors[0] and best["val_top5_error"] == errors[1]
    assert best["val_loss"] == pytest.approx(loss, rel=1e-5)
    info = vggspec.model_info(out)
    assert info.class_names == tuple(sorted(p.name for p in (tiny / "data" / "train").iterdir()))
    stats = json.loads(next((tiny / "data").rglob(".vggspec-stats.json")).read_text())
    assert info.preprocessing == vggspec.Preprocessing.trained(stats["mean_rgb"])
    assert info.input_size == (32, 32) and info.train_scale == vggspec.TrainScale(36, 44)
    assert vggspec.model_info(out / "checkpoints" / "last.pt") == info
    assert (out / "config.yaml").read_text().count("max_steps: 10") == 1
    assert [r["step"] for r in rows if r["kind"] == "step"] == list(range(1, 11))
    assert any(r["kind"] == "val" for r in rows)
    assert cli("plot", out)[0] == 0 and (out / "curves.png").stat().st_size > 1000


def test_model_safetensors_is_the_net_of_the_best_validation(tiny, tmp_path, cli, monkeypatch):
    # Scripted validation errors: epoch 2 is the best, epoch 3 worse.
    from vggspec.runtime.train import tasks

    errors = iter([0.5, 0.3, 0.4])

    def scripted(net, data, ctx, batch_size, workers):
        error = next(errors)
        return {"val_loss": error, "val_top1_error": error, "val_top5_error": 0.0, "images": 25}

    monkeypatch.setattr(tasks, "validate", scripted)  # a classifier's validation
    out = tmp_path / "run"
    code, _, err = cli("run", "train", *settings(tiny, out, "epochs=3"))
    assert code == 0, err
    assert next(errors, None) is None  # three validations, one per epoch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 21 and summary["best_step"] == 14
    assert summary["best_val_top1_error"] == 0.3 and summary["val_top1_error"] == 0.4
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert best["position"]["step"] == 14 and last["position"]["step"] == 21
    saved = weights(out)
    assert saved.keys() == best["model"].keys()
    assert all(torch.equal(saved[k], best["model"][k]) for k in saved)
    assert not all(torch.equal(saved[k], last["model"][k]) for k in saved)
    line = "model.safetensors: the net of the best validation, after epoch 2 (step 14, "
    assert line + "top-1 error 30.00%)" in (out / "train.log").read_text()


def test_one_cycle_sets_every_step_s_learning_rate(tiny, tmp_path, cli):
    from vggspec.runtime.train.schedule import OneCycleSchedule

    out = tmp_path / "run"
    extra = ("max_steps=10", "lr=0.01", "lr_schedule=one-cycle", "lr_warmup=0.3")
    code, _, err = cli("run", "train", *settings(tiny, out, *extra))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in rows if r["kind"] == "step"]
    schedule = OneCycleSchedule(0.01, 0.3)
    assert logged == [schedule.at(step, 10) for step in range(10)]
    assert logged[2] == 0.01 and max(logged) == 0.01  # the peak ends the 3-step warm-up
    assert logged[:3] == sorted(logged[:3]) and logged[2:] == sorted(logged[2:], reverse=True)
    assert 0 < logged[0] < 0.005 and 0 < logged[-1] < 0.001
    assert json.loads((out / "summary.json").read_text())["lr_drops"] == 0


def test_channels_last_trains_the_same_net(tiny, tmp_path, cli):
    runs = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        code, _, err = cli(
            "run", "train", *settings(tiny, out, "max_steps=5", f"channels_last={flag}")
        )
        assert code == 0, err
        runs[flag] = weights(out)
    assert runs["true"].keys() == runs["false"].keys()
    assert max_rel_diff(runs["true"], runs["false"]) < 1e-4  # other kernels, other rounding
    for flag in ("false", "true"):
        log = (tmp_path / flag / "train.log").read_text()
        layout = "NHWC (channels_last)" if flag == "true" else "NCHW"
        assert f"activations and conv weights {layout}: set on cpu" in log


@pytest.mark.parametrize(
    "precision, device, chosen",
    [("fp32", "cpu", False), ("bf16", "cpu", True), ("fp32", "cuda", True), ("bf16", "cuda", True)],
)
def test_channels_last_defaults_to_where_it_measured_faster(
    tiny, tmp_path, cli, precision, device, chosen
):
    from vggspec.runtime.train.config import make_config

    cfg = make_config({"precision": precision})
    assert cfg.channels_last is None and cfg.uses_channels_last(torch.device(device)) is chosen
    for flag in (False, True):  # set: as set
        assert (
            make_config({"precision": precision, "channels_last": flag}).uses_channels_last(
                torch.device(device)
            )
            is flag
        )
    if device == "cpu" and precision == "bf16":  # and the log says which
        out = tmp_path / "bf16"
        code, _, err = cli("run", "train", *settings(tiny, out, "max_steps=1", "precision=bf16"))
        assert code == 0, err
        assert "NHWC (channels_last): default for bf16 on cpu" in (out / "train.log").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["lrr=0.1"], "unknown setting in the command line: 'lrr' (did you mean 'lr'?)"),
        (["lr=0"], "lr must be > 0"),
        (["epochs=two"], "epochs must be int"),
        (["scale=[300,200]"], "S_min ≤ S_max"),
        (["lr_schedule=cosine"], "lr_schedule must be one of plateau, one-cycle, got 'cosine'"),
        (["lr_warmup=1"], "lr_warmup must be in [0, 1), got 1.0"),
        (["data=/nonexistent/folder"], "data=/nonexistent/folder: no train/ folder"),
        (["batch_size=64"], "60 training images are fewer than one batch (batch_size=64)"),
        (["--nproc", "2", "batch_size=3"], "batch_size=3 (the global batch) does not split"),
    ],
)
def test_bad_settings_are_one_message_and_exit_2(tiny, tmp_path, cli, extra, message):
    options = extra[:2] if extra[0] == "--nproc" else []
    base = settings(tiny, tmp_path / "run", "max_steps=2", *extra[len(options) :])
    code, _, err = cli("run", "train", *options, *base)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written before the settings hold


def test_spec_error_and_existing_run_are_clear(tiny, tmp_path, cli):
    bad = tmp_path / "bad.vgg"
    bad.write_text("conv3-8 conv4-8\n")
    code, _, err = cli("run", "train", *settings(tiny, tmp_path / "r", f"spec={bad}"))
    assert code == 2 and "bad.vgg:1:9: error" in err
    out = tmp_path / "done"
    assert cli("run", "train", *settings(tiny, out, "max_steps=2"))[0] == 0
    code, _, err = cli("run", "train", *settings(tiny, out, "max_steps=2"))
    assert code == 2 and "already holds a run" in err


def test_no_traceback_for_a_bad_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: [1, 2\n")
    result = vggspec_cmd("run", "train", "--config", config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "not valid YAML" in result.stderr


def test_exponent_floats_read_as_numbers_in_settings_and_recipes(tmp_path):
    from vggspec.runtime.train.config import ConfigError, load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 1e-2\nweight_decay: 5e-4\n")  # YAML 1.1 reads these as strings
    cfg = load_config(recipe, ["lr=1e-3"])
    assert (cfg.lr, cfg.weight_decay) == (0.001, 0.0005)
    with pytest.raises(ConfigError, match="lr must be float, got 'fast'"):
        load_config(recipe, ["lr=fast"])
    # A key given twice: the last one won without a word.
    recipe.write_text("lr: 0.1\nepochs: 2\nlr: 0.002\n")
    with pytest.raises(ConfigError) as err:
        load_config(recipe, [])
    assert str(err.value) == f"{recipe}:3:1: not valid YAML (lr is given twice)"


def test_relative_paths_survive_a_resume_from_another_folder(tiny, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tiny)
    out = tmp_path / "run"
    args = ["spec=tiny.vgg", "data=data", f"out={out}", *BASE, "max_steps=2"]
    assert cli("run", "train", *args)[0] == 0
    saved = (out / "config.yaml").read_text()
    assert f"spec: {tiny / 'tiny.vgg'}" in saved and f"data: {tiny / 'data'}" in saved
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("run", "train", "--resume", out, "max_steps=4")
    assert code == 0, err
    assert "finished: 4 steps" in stdout


def test_a_recipe_of_ones_own_names_a_built_in_spec_from_any_folder(
    tiny, tmp_path, cli, monkeypatch
):
    # It looked for specs/demo.vgg beside the recipe only: "no such file".
    from vggspec.builtin import HOME

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("spec: specs/demo.vgg\nmax_steps: 1\n")
    out = tmp_path / "run"
    extra = [f"data={tiny / 'data'}", f"out={out}", *BASE]
    code, _, err = cli("run", "train", "--config", "mine.yaml", *extra)
    assert code == 0, err
    assert f"spec: {HOME / 'specs' / 'demo.vgg'}\n" in (out / "config.yaml").read_text()


# With dropout on is the stronger check (masks drawn for the global batch); without it runs
# in the slow tier.
@pytest.mark.parametrize("dropout", [pytest.param("0", marks=pytest.mark.slow), "0.5"])
def test_two_processes_give_the_one_process_weights(tiny, tmp_path, cli, dropout):
    # With dropout, each sample's masks come from (seed, step, its row in the global
    # batch), whatever the number of processes.
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["max_steps=10", f"dropout={dropout}"]
    # The one-process reference in this process (a fresh one costs ~4 CPU s of imports).
    assert cli("run", "train", *settings(tiny, one, *common))[0] == 0
    result = vggspec_cmd("run", "train", "--nproc", "2", *settings(tiny, two, *common))
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_rel_diff(weights(two), weights(one)) < 1e-5
    a, b = (json.loads((r / "summary.json").read_text()) for r in (one, two))
    assert b["processes"] == 2
    # The log says the global batch's loss (it said rank 0's half: 2.8891 for 2.7677).
    losses = [_step_losses(r) for r in (one, two)]
    assert len(losses[0]) == 10 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert a["val_top1_error"] == b["val_top1_error"]  # exact validation on 25 images
    assert a["val_top5_error"] == b["val_top5_error"]


@pytest.mark.slow  # ~17 s; the default run keeps the 2-process check above
def test_two_processes_give_the_one_process_weights_with_batch_norm(tiny, tmp_path):
    # BN's batch statistics are those of the global batch, summed across the processes.
    spec = tmp_path / "tiny-bn.vgg"
    spec.write_text(TINY_SPEC.replace("conv3-8", "conv3-8 BN").replace("FC-32 FC", "FC-32 BN FC"))
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["max_steps=10", "dropout=0", f"spec={spec}"]
    assert vggspec_cmd("run", "train", *settings(tiny, one, *common)).returncode == 0
    result = vggspec_cmd("run", "train", "--nproc", "2", *settings(tiny, two, *common))
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = weights(two), weights(one)
    assert "bn1_1.running_var" in a and "bn3.running_mean" in a
    # model.safetensors is the net of the best validation: the same step in both runs,
    # and its BN counters say how many steps it trained.
    best = [json.loads((r / "summary.json").read_text())["best_step"] for r in (two, one)]
    assert best[0] == best[1] and 0 < best[0] <= 10
    assert int(a["bn1_1.num_batches_tracked"]) == int(b["bn1_1.num_batches_tracked"]) == best[0]
    # A bias before BN gets no gradient (BN takes the mean out): it stays at its initial
    # zero up to rounding, so it is compared absolutely, the rest relatively.
    before_bn = {"conv1_1.bias", "fc3.bias"}
    assert max((a[k] - b[k]).abs().max().item() for k in before_bn) < 1e-7
    rest = {k: v for k, v in a.items() if v.is_floating_point() and k not in before_bn}
    assert max_rel_diff(rest, b) < 1e-5


@pytest.mark.slow  # ~11 s; the default run keeps the 2-process check above
def test_two_machines_on_loopback(tiny, tmp_path):
    from vggspec.runtime.dist.launch import free_port

    one, two = tmp_path / "one", tmp_path / "nodes"
    common = ["max_steps=10", "dropout=0"]
    assert vggspec_cmd("run", "train", *settings(tiny, one, *common)).returncode == 0
    port = free_port()
    node = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "vggspec-test",
        "--local-addr",
        "127.0.0.1",
        "-m",
        "vggspec",
        "run",
        "train",
        *settings(tiny, two, *common),
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    machines = [
        subprocess.Popen(
            node, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        outputs = [m.communicate(timeout=240) for m in machines]
    finally:
        for m in machines:
            m.kill()
    assert [m.returncode for m in machines] == [0, 0], outputs[0][1][-2000:]
    assert max_rel_diff(weights(two), weights(one)) < 1e-5


def test_kill_9_mid_epoch_then_resume_is_bit_identical(tiny, tmp_path, cli):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # 4 epochs of 7 steps, patience 0: the learning rate drops after epoch 2 or 3.
    common = ["epochs=4", "lr_patience=0", "lr=0.01"]
    # The straight run in this process (a fresh one costs ~4 CPU s of imports); the killed
    # run and its resume each in a fresh one, so that the resume has only the disk to go on.
    assert cli("run", "train", *settings(tiny, straight, *common))[0] == 0
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["lr_drops"] >= 1, "the recipe must cross a learning-rate drop"
    crashed = vggspec_cmd(
        "run", "train", *settings(tiny, killed, *common), env={"VGGSPEC_FAULT": "kill:11"}
    )
    assert crashed.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["position"]["step"] == 9
    resumed = vggspec_cmd("run", "train", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(straight), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "summary.json").read_text())["lr_drops"] == summary["lr_drops"]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tiny, tmp_path):
    out = tmp_path / "run"
    crashed = vggspec_cmd(
        "run",
        "train",
        *settings(tiny, out, "max_steps=8"),
        env={"VGGSPEC_FAULT": "kill-in-checkpoint:6"},
    )
    assert crashed.returncode == -signal.SIGKILL
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["position"]["step"] == 3
    assert vggspec_cmd("run", "train", "--resume", out).returncode == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 8


def test_nothing_holds_the_process_group_when_it_is_destroyed(tiny, tmp_path, cli, monkeypatch):
    # DDP's reducer holds the process group. Destroyed while DDP lived (stop 18), gloo's
    # backend went whenever DDP did, at interpreter exit at worst, where CI saw a finished
    # worker abort. Here a 1-process gloo group that the trainer is told is 2 processes
    # (so that it wraps the net in DDP) shows what is alive when the group is destroyed.
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from vggspec.runtime.dist import context

    def setup(device="auto", timeout_s=600.0, threads=None):
        dist.init_process_group(
            "gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1
        )
        return context.Context(0, 2, 0, torch.device("cpu"))

    alive, destroy = [], context.teardown

    def teardown():
        gc.collect()
        alive.append(sum(type(o) is DistributedDataParallel for o in gc.get_objects()))
        destroy()

    monkeypatch.setattr(context, "setup", setup)
    monkeypatch.setattr(context, "teardown", teardown)
    code, _, err = cli("run", "train", *settings(tiny, tmp_path / "run", "max_steps=4"))
    assert code == 0, err
    assert "2 process(es)" in err  # the trainer did take itself for one of two
    assert alive == [0] and not dist.is_initialized()


def test_nan_on_one_rank_stops_both_at_the_same_step(tiny, tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    result = vggspec_cmd(
        "run",
        "train",
        "--nproc",
        "2",
        *settings(tiny, out, "max_steps=10"),
        env={"VGGSPEC_FAULT": "nan:5:1"},
        timeout=180,
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 120  # no hang
    assert "the loss became" in result.stderr and "at step 5 (on 1 of 2 processes)" in result.stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["position"]["step"] == 3
    assert not (out / "model.safetensors").exists()


def test_loss_reads_keep_the_first_non_finite_step_on_the_device():
    from vggspec.runtime.dist.context import Context
    from vggspec.runtime.train.loss_reads import LossReads

    ctx = Context(0, 1, 0, torch.device("cpu"))
    reads = LossReads()
    for step, loss in enumerate([1.0, float("nan"), float("inf"), 2.5], start=1):
        reads.add(torch.tensor(loss), step)
    read = reads.read(ctx, stop_requested=False)
    assert (read.loss, read.first_bad_step, read.bad_ranks, read.stop) == (2.5, 2, 1, False)
    reads.add(torch.tensor(0.5), 5)
    assert reads.read(ctx, stop_requested=True) == type(read)(0.5, None, 0, True)


def test_a_nan_between_reads_stops_every_rank_at_the_next_read(tiny, tmp_path):
    """The loss is read every log_every steps (and before checkpoints): a NaN at step 4 on
    rank 1 is seen at step 5 (log_every=5) by both ranks, before step 6's checkpoint."""
    out = tmp_path / "run"
    result = vggspec_cmd(
        "run", "train", "--nproc", "2", *settings(tiny, out, "max_steps=10", "log_every=5"),
        env={"VGGSPEC_FAULT": "nan:4:1"}, timeout=180,
    )  # fmt: skip
    assert result.returncode != 0
    assert "the loss became non-finite at step 4 (on 1 of 2 processes), seen at step 5" in (
        result.stderr
    )
    assert load_checkpoint(out / "checkpoints" / "last.pt")["position"]["step"] == 3
    assert not (out / "model.safetensors").exists()


def test_the_loss_is_read_every_log_every_steps_and_logged_exactly(
    tiny, tmp_path, cli, monkeypatch
):
    """No host synchronisation per step: 10 steps at log_every=4 (checkpoint_every=100, 7
    steps an epoch) read the loss at steps 4, 7 (the epoch's end), 8 and 10 (the last), and
    the logged losses are those a read at every step logs."""
    from vggspec.runtime.train.trainer import Trainer

    reads = []
    check = Trainer._check_finite
    monkeypatch.setattr(
        Trainer,
        "_check_finite",
        lambda self, read, step: reads.append(step) or check(self, read, step),
    )
    every_step, sparse = tmp_path / "every", tmp_path / "sparse"
    assert cli("run", "train", *settings(tiny, every_step, "max_steps=10", "dropout=0"))[0] == 0
    assert len(reads) == 10
    reads.clear()
    extra = ("max_steps=10", "dropout=0", "log_every=4", "checkpoint_every=100")
    assert cli("run", "train", *settings(tiny, sparse, *extra))[0] == 0
    assert reads == [4, 7, 8, 10]

    def losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if r["kind"] == "step"}

    logged = losses(sparse)
    assert sorted(logged) == [4, 8, 10] and all(logged[s] == losses(every_step)[s] for s in logged)


@pytest.mark.slow  # ~13 s; kill and resume stay in the default run (test_faults.py)
def test_a_worker_killed_under_max_restarts_still_gives_the_result(tiny, tmp_path):
    straight, restarted = tmp_path / "straight", tmp_path / "restarted"
    common = ["max_steps=12", "dropout=0"]
    assert vggspec_cmd("run", "train", *settings(tiny, straight, *common)).returncode == 0
    result = vggspec_cmd(
        "run",
        "train",
        "--nproc",
        "2",
        "--max-restarts",
        "1",
        *settings(tiny, restarted, *common),
        env={"VGGSPEC_FAULT": "kill:8:1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_rel_diff(weights(restarted), weights(straight)) < 1e-5


def test_a_worker_killed_without_restarts_is_named_in_lines_and_the_run_resumes(tiny, tmp_path):
    # It ended in rank 0's 60-line gloo traceback and "the workers failed (ChildFailedError)".
    out = tmp_path / "run"
    result = vggspec_cmd(
        "run", "train", "--nproc", "2", *settings(tiny, out, "max_steps=12", "dropout=0"),
        env={"VGGSPEC_FAULT": "kill:8:1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("vggspec:")]
    assert re.fullmatch(
        r"vggspec: worker rank 1 \(pid \d+\) was killed by SIGKILL; the others were stopped",
        said[-2],
    ), said
    assert said[-1] == f"vggspec: the run's last checkpoint is kept: continue with vggspec run " \
        f"train --resume {out}"  # fmt: skip
    resumed = vggspec_cmd("run", "train", "--nproc", "2", "--resume", str(out))
    assert resumed.returncode == 0 and "finished: 12 steps" in resumed.stdout, resumed.stderr


def test_sigterm_writes_a_checkpoint_and_exits_0(tiny, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggspec", "run", "train", *settings(tiny, out, "epochs=50")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert "SIGTERM: checkpoint written" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "stopped"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["position"]["step"] == summary["steps"]


def test_corrupt_files_are_skipped_and_reported(tmp_path, cli):
    from corrupt_fixture import make_corrupt_fixture

    root = tmp_path / "data"
    expected = make_corrupt_fixture(root)
    bad = sorted(path for path, outcome in expected.items() if outcome.startswith("bad:"))
    spec = tmp_path / "tiny.vgg"
    spec.write_text(TINY_SPEC.replace("FC-10", "FC-2"))
    out = tmp_path / "run"
    code, _, err = cli(
        "run",
        "train",
        f"spec={spec}",
        f"data={root}",
        f"out={out}",
        "batch_size=4",
        "scale=[36,44]",
        "workers=0",
        "max_steps=4",
        "max_bad_files=0.5",
        "init=glorot",
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bad_files"] == len(bad) > 0
    for path in bad:
        assert f"bad file {root / path}" in err


def test_mean_std_normalisation_travels_with_the_weights(tiny, tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("run", "train", *settings(tiny, out, "max_steps=2", "normalise=mean-std"))
    assert code == 0, err
    norm = vggspec.model_info(out).preprocessing
    std = norm.std_rgb
    assert len(std) == 3 and all(20 < s < 120 for s in std)  # 0..255 pixels
    pixels = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    expected = (200 - torch.tensor(norm.mean_rgb)) / torch.tensor(std)
    assert torch.allclose(norm(pixels)[0, :, 0, 0], expected)


# -- a run's settings are fixed at its start -------------------------------------------------


def _files(run: Path) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_an_edited_config_yaml_is_refused_naming_the_keys(tiny, tmp_path, cli):
    # It was taken: with scale: and normalise: deleted, a resume rewrote model.safetensors
    # as "mean only, S = 256", and the dense error went from 4.8 % to 23 %.
    out, copy = tmp_path / "run", tmp_path / "copy"
    assert cli("run", "train", *settings(tiny, out, "max_steps=4", "normalise=mean-std"))[0] == 0
    shutil.copytree(out, copy)
    config = copy / "config.yaml"
    text = config.read_text()
    assert text.startswith("# The settings of this run, fixed at its start")

    def refused(edited: str, *extra) -> str:
        config.write_text(edited)
        before = _files(copy)
        code, _, err = cli("run", "train", "--resume", copy, *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert _files(copy) == before  # nothing written
        return err

    deleted = "".join(
        line
        for line in text.splitlines(True)
        if not line.startswith(("scale:", "- 36", "- 44", "normalise:"))
    )
    err = refused(deleted)
    assert f"{config} was edited after the run started: scale (deleted), normalise (deleted)" in err
    assert f"vggspec run train --config {config} out=NEW_FOLDER" in err
    err = refused(text.replace("normalise: mean-std", "normalise: mean"))
    assert "normalise ('mean-std' → 'mean')" in err
    err = refused(text.replace("lr: 0.001", "lr: 0.5"))
    assert "lr (0.001 → 0.5)" in err
    # A resumable setting edited in the file: refused too, unless the command line gives it.
    err = refused(text.replace("max_steps: 4", "max_steps: 6"))
    assert "max_steps (4 → 6)" in err and "max_steps may change on the command line" in err
    assert "--config" in refused(text, "--config", config)
    code, stdout, err = cli("run", "train", "--resume", copy, "max_steps=6")
    assert code == 0, err
    assert "finished: 6 steps" in stdout
    info = vggspec.model_info(copy)
    assert info.preprocessing.std_rgb != (1.0, 1.0, 1.0) and info.train_scale.lo == 36
    # A new run from an edited file, as the message says.
    config.write_text(text.replace("lr: 0.001", "lr: 0.002"))
    code, _, err = cli("run", "train", "--config", config, f"out={tmp_path / 'new'}")
    assert code == 0, err
    assert vggspec.load(tmp_path / "new" / "model.safetensors") is not None


def test_an_edited_settings_record_or_a_run_without_one(tiny, tmp_path, cli):
    out = tmp_path / "run"
    assert cli("run", "train", *settings(tiny, out, "max_steps=4"))[0] == 0
    # A start killed between its two files: settings.json says max_steps=5, config.yaml is
    # still the previous start's, whole (its digest matches): both are records, not edits.
    first = (out / "config.yaml").read_text()
    assert cli("run", "train", "--resume", out, "max_steps=5")[0] == 0
    (out / "config.yaml").write_text(first)
    code, _, err = cli("run", "train", "--resume", out, "max_steps=6")
    assert code == 0, err
    record = json.loads((out / "settings.json").read_text())
    record["settings"]["lr"] = 0.5
    (out / "settings.json").write_text(json.dumps(record))
    code, _, err = cli("run", "train", "--resume", out, "max_steps=7")
    assert code == 2 and "settings.json: damaged or edited" in err
    # A run written before settings.json: its last checkpoint's settings are the record.
    (out / "settings.json").unlink()
    config = out / "config.yaml"
    text = "".join(line for line in config.read_text().splitlines(True) if line[0] != "#")
    config.write_text(text.replace("scale:\n- 36\n- 44", "scale: 256"))
    code, _, err = cli("run", "train", "--resume", out, "max_steps=7")
    assert code == 2 and "scale ([36, 44] → 256)" in err, err
    config.write_text(text)
    code, stdout, err = cli("run", "train", "--resume", out, "max_steps=7")
    assert code == 0, err
    assert (out / "settings.json").is_file() and "finished: 7 steps" in stdout


def test_a_resume_builds_the_net_it_started_with(tiny, tmp_path, cli):
    spec = tmp_path / "tiny.vgg"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "run"
    assert cli("run", "train", *settings(tiny, out, "max_steps=4", f"spec={spec}"))[0] == 0
    spec.write_text(TINY_SPEC.replace("conv3-8", "conv3-12"))  # edited after the start
    code, _, err = cli("run", "train", "--resume", out, "max_steps=6")
    assert code == 0, err
    assert f"{spec} has changed since the run started" in err
    assert tuple(weights(out)["conv1_1.weight"].shape) == (8, 3, 3, 3)
    spec.unlink()
    code, _, err = cli("run", "train", "--resume", out, "max_steps=7")
    assert code == 0 and "is gone or unreadable" in err


def test_a_resume_below_where_the_run_stands_is_refused(tiny, tmp_path, cli):
    """max_steps=2 on a run at step 10 trained nothing, exit 0, and settings.json and
    config.yaml said max_steps 2 beside a summary of 10 steps."""
    out = tmp_path / "run"
    assert cli("run", "train", *settings(tiny, out, "max_steps=10"))[0] == 0  # into epoch 2
    before = _files(out)
    for setting, line in (
        ("max_steps=2", "stands at step 10: max_steps=2 would end it before that; give "
                        "max_steps=10 or more"),
        ("epochs=1", "stands in epoch 2: epochs=1 would end it before that; give epochs=2 "
                     "or more"),
    ):  # fmt: skip
        code, _, err = cli("run", "train", "--resume", out, setting)
        assert code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == f"{out} {line}"
        assert _files(out) == before  # nothing written
    code, _, err = cli("run", "train", "--resume", out, "max_steps=10")  # where it stands
    assert code == 0, err


def test_a_resume_asking_for_more_where_the_other_bound_ended_the_run_is_refused(
    tiny, tmp_path, cli
):
    """max_steps=20 on a run that had trained its epochs=1 trained nothing, said "finished"
    and recorded max_steps 20; so did epochs= on a run ended by its max_steps."""
    out = tmp_path / "run"
    assert cli("run", "train", *settings(tiny, out, "epochs=1"))[0] == 0
    steps = json.loads((out / "summary.json").read_text())["steps"]
    ended_by_steps = tmp_path / "steps"
    assert cli("run", "train", *settings(tiny, ended_by_steps, "max_steps=3"))[0] == 0
    for run, setting, line in (
        (out, "max_steps=20", f"has trained its epochs=1 (step {steps}): max_steps=20 would "
                              f"train nothing more; give epochs={-(-20 // steps)} too"),
        (ended_by_steps, "epochs=90", "has trained its max_steps=3: epochs=90 would train "
                                      "nothing more; give a larger max_steps too"),
    ):  # fmt: skip
        before = _files(run)
        code, _, err = cli("run", "train", "--resume", run, setting)
        assert code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == f"{run} {line}"
        assert _files(run) == before  # nothing written
    # Both raised: it trains on; the same figure again, or none: a finished run stays so.
    code, stdout, err = cli("run", "train", "--resume", out, "max_steps=20", "epochs=3")
    assert code == 0 and "finished: 20 steps" in stdout, err
    code, stdout, err = cli("run", "train", "--resume", out, "max_steps=20")
    assert code == 0 and "finished: 20 steps" in stdout, err


def test_a_resume_refuses_data_whose_classes_changed(tiny, tmp_path, cli):
    # A class folder renamed between the start and the resume moved every class after it one
    # output along: the run went on training output 0 on another class, exit 0, and its
    # model.safetensors named the new order.
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny / "data", data)
    args = settings(tiny, out, "max_steps=4", f"data={data}")
    assert cli("run", "train", *args)[0] == 0
    first = sorted(p.name for p in (data / "train").iterdir())[0]
    for split in ("train", "val"):
        (data / split / first).rename(data / split / f"zz-{first}")
    before = _files(out)
    code, _, err = cli("run", "train", "--resume", out, "max_steps=6")
    last = err.strip().splitlines()[-1]  # after the log lines of the data it scanned
    assert code == 2 and "Traceback" not in err, err
    assert f"{data}: its classes changed since the run started" in last
    assert f"zz-{first}" in last
    assert _files(out) == before  # nothing written


@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log", "settings.json"])
def test_a_resume_refuses_a_fifo_or_folder_where_a_run_file_should_be(tiny, tmp_path, cli, name):
    # A FIFO as metrics.jsonl held the resume in open() for ever, past SIGTERM (the trainer
    # takes it as a stop request, and the step that would act on it never came).
    out = tmp_path / "run"
    assert cli("run", "train", *settings(tiny, out, "max_steps=3"))[0] == 0
    (out / name).unlink()
    os.mkfifo(out / name)
    before = sorted(p.name for p in out.iterdir())
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the resume did not finish"))
    signal.alarm(60)
    try:
        code, _, err = cli("run", "train", "--resume", out, "max_steps=4")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{out / name}: not a regular file" in err
    assert sorted(p.name for p in out.iterdir()) == before


# -- what holds exactly ------------------------------------------------------------------------


def test_identical_runs_write_identical_files_and_the_probe_changes_nothing(
    tiny, tmp_path, cli, monkeypatch
):
    # safetensors kept the metadata in a hash map: its order, so the file's bytes, changed
    # from one save to the next. And the memory probe must leave the result as it was: the
    # RNG streams, the weights and BN's running statistics.
    spec = tmp_path / "tiny-bn.vgg"
    spec.write_text(TINY_SPEC.replace("conv3-8", "conv3-8 BN"))
    digests = []
    for name, probe in (("a", "1"), ("b", "1"), ("c", "0")):
        monkeypatch.setenv("VGGSPEC_MEMORY_PROBE", probe)
        args = settings(tiny, tmp_path / name, "max_steps=5", f"spec={spec}")
        code, _, err = cli("run", "train", *args)
        assert code == 0, err
        assert ("memory: forward and backward took" in err) == (probe == "1")
        digests.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()))
    assert len({d.hexdigest() for d in digests}) == 1
    assert "bn1_1.running_mean" in weights(tmp_path / "a")


DEMO_RECIPE = ROOT / "specs" / "demo.yaml"


def _two_process_drift(data: Path, tmp_path: Path, *extra: str) -> float:
    """Largest relative difference between the 1- and 2-process nets after 10 steps of the
    demo recipe (batch norm, dropout off, one-cycle, channels-last) in float64."""
    common = ["--config", DEMO_RECIPE, "max_steps=10", "precision=fp64", "workers=0", *extra]
    if data is not None:
        common.append(f"data={data}")
    runs = []
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        result = vggspec_cmd("run", "train", "--nproc", nproc, *common, f"out={out}")
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(load_checkpoint(out / "checkpoints" / "last.pt")["model"])
    one, two = runs
    assert one["conv1_1.weight"].dtype == torch.float64 and "bn1_1.running_var" in one
    # A conv's bias before BN gets no gradient (BN takes the mean out): it holds rounding
    # noise around its initial 0 (~1e-16), compared absolutely; the rest relatively.
    before_bn = {f"{n}.bias" for n in ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1")}
    assert all(f"bn{k[4:7]}.weight" in one for k in before_bn)
    assert max((one[k] - two[k]).abs().max().item() for k in before_bn) <= 1e-12
    rest = {k: v for k, v in one.items() if v.is_floating_point() and k not in before_bn}
    return max_rel_diff({k: two[k] for k in rest}, rest)


def test_in_float64_two_processes_compute_what_one_does(tiny, tmp_path):
    # The demo recipe on 60 images: the 2-process algorithm is the 1-process one; what float32
    # shows on top of it is rounding (README: "Several processes").
    assert _two_process_drift(tiny / "data", tmp_path) <= 1e-12


@pytest.mark.slow  # the built-in demo data (3,500 images written first): ~1 min
def test_in_float64_two_processes_compute_what_one_does_on_the_demo(tmp_path):
    os.environ["VGGSPEC_DEMO_DATA"] = str(tmp_path / "demo-data")
    try:
        assert _two_process_drift(None, tmp_path) <= 1e-12
    finally:
        del os.environ["VGGSPEC_DEMO_DATA"]


def test_out_takes_an_empty_folder_or_what_a_start_left_and_finetune_names_its_weights(
    tiny, tmp_path, cli
):
    """A folder that holds no run is taken only when empty or holding what a start writes
    before its first checkpoint (test_refusals.py: a folder of the user's own is refused)."""
    first = tmp_path / "first"
    assert cli("run", "train", *settings(tiny, first, "max_steps=2"))[0] == 0
    left = tmp_path / "left"  # a start killed before its first checkpoint
    left.mkdir()
    for name in ("settings.json", "config.yaml", "train.log", "metrics.jsonl"):
        shutil.copy(first / name, left / name)
    (left / ".metrics.jsonl.999999999.abcd1234.tmp").write_text("")  # its writer is gone
    (tmp_path / "empty").mkdir()
    # finetune= starts from all of first's weights; the recipe's init=glorot would not count.
    tuned = [s for s in settings(tiny, left, "max_steps=2") if s != "init=glorot"]
    code, _, err = cli("run", "train", *tuned, f"finetune={first}")
    assert code == 0, err
    assert f"initialised all layers from {first / 'model.safetensors'} (finetune=)" in err
    assert json.loads((left / "summary.json").read_text())["steps"] == 2
    assert not list(left.glob(".*.tmp"))
    code, _, err = cli("run", "train", *settings(tiny, tmp_path / "empty", "max_steps=1"))
    assert code == 0, err
    # A start killed while writing settings.json left only its temporary: taken, not "holds
    # files but not a run".
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".settings.json.999999999.abcd1234.tmp").write_text("{")
    code, _, err = cli("run", "train", *settings(tiny, killed, "max_steps=1"))
    assert code == 0, err


def test_finetune_given_here_overrides_the_recipes_init(tiny, tmp_path):
    # specs/demo.yaml says init: glorot: finetune= on top of it was refused, with init= or
    # without, and the refusal's "give one" could not be followed.
    from vggspec.runtime.train.config import ConfigError, load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("init: glorot\n")
    cfg = load_config(recipe, [f"finetune={tmp_path / 'run'}"])
    assert (cfg.init, cfg.finetune) == ("gaussian", str(tmp_path / "run"))  # no init request
    with pytest.raises(ConfigError, match="would not take effect; give one"):  # both here
        load_config(recipe, [f"finetune={tmp_path}", "init=gaussian"])
    recipe.write_text(f"init: glorot\nfinetune: {tmp_path}\n")
    with pytest.raises(ConfigError, match="would not take effect; give one"):  # both there
        load_config(recipe, [])


def test_a_run_beside_the_images_under_the_data_root_is_taken(tiny, tmp_path, cli):
    # `cd DATA && vggspec run train data=.` (out= runs/… under the root) was refused as
    # "inside data=": only what the run reads (train/, val/, annotations/) is.
    data = tmp_path / "data"
    shutil.copytree(tiny / "data", data)
    out = data / "runs" / "a"
    code, _, err = cli("run", "train", *settings(tiny, out, "max_steps=1", f"data={data}"))
    assert code == 0, err
    assert (out / "model.safetensors").is_file()
