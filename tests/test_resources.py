"""Memory and disk checked before any work: a job that cannot fit is one line, exit 2, and
nothing written; the estimate is `vggspec compile`'s figures."""

from __future__ import annotations

import re
from collections import namedtuple

import pytest
from eval_helpers import CLASSES, SPEC_32, save_net, write_images
from fault_helpers import make_setup, train_args
from vggspec.compiler import compile_spec, parse
from vggspec.runtime.dist import resources
from vggspec.runtime.dist.cpu_memory import available_bytes
from vggspec.runtime.dist.resources import NotEnoughResources, check_training, training_need

HUGE = "input 224x224 RGB conv3-999999 maxpool FC-10 soft-max\n"  # 467 GiB of weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("resources"))


def test_the_estimate_is_the_compile_report_s_figures():
    spec = parse(SPEC_32)
    totals = compile_spec(spec, batch=4).graph["totals"]
    need = training_need(spec, 4)
    assert need.weights == need.gradients == need.momentum == totals.param_bytes
    assert need.activations == totals.training_bytes + totals.forward_bytes
    assert need.memory == 3 * totals.param_bytes + need.activations
    assert need.checkpoint == 2 * totals.param_bytes
    assert training_need(spec, 4, momentum=False).memory == need.memory - totals.param_bytes


def test_bf16_activations_are_priced_at_two_bytes_and_the_weights_at_four(setup, cli, monkeypatch):
    spec = parse(SPEC_32)
    fp32, bf16 = training_need(spec, 4), training_need(spec, 4, precision="bf16")
    totals = compile_spec(spec, batch=4, dtype="bfloat16").graph["totals"]
    assert bf16.activations == totals.training_bytes + totals.forward_bytes < fp32.activations
    assert (bf16.weights, bf16.gradients, bf16.momentum) == (fp32.weights,) * 3  # fp32 master
    memory = bf16.memory  # a bf16 run fits where an fp32 one does not
    check_training(spec, 4, 1, "cpu", "out", memory=memory, disk=1 << 40, precision="bf16")
    with pytest.raises(NotEnoughResources):
        check_training(spec, 4, 1, "cpu", "out", memory=memory, disk=1 << 40)
    # And the CLI prices a precision=bf16 run so.
    need = training_need(parse((setup / "tiny.vgg").read_text()), 8, precision="bf16")
    monkeypatch.setattr(resources, "available_bytes", lambda: need.memory - 1)
    out = setup / "bf16-run"
    code, _, err = cli(*train_args(setup, out, "max_steps=2", "device=cpu", "precision=bf16"))
    assert code == 2 and f"activations {resources.size_text(need.activations)} at" in err, err
    assert not out.exists()


def test_memory_available_is_read_on_linux():
    memory = available_bytes()
    assert memory is not None and 0 < memory < 1 << 50  # Linux has /proc/meminfo


@pytest.mark.parametrize("version", [1, 2])
def test_a_memory_cgroup_s_room_leaves_out_the_cache_it_can_drop(tmp_path, version):
    from vggspec.runtime.dist.cpu_memory import _cgroup_room

    proc = tmp_path / "cgroup"
    mount = tmp_path / "sys"
    if version == 2:
        proc.write_text("0::/job\n")
        folder = mount / "job"
        names = ("memory.max", "memory.current", "inactive_file")
    else:
        proc.write_text("4:memory:/host/path/hidden\n0::/\n")
        folder = mount / "memory"  # a container sees its own cgroup at the mount's root
        names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    folder.mkdir(parents=True)
    (folder / names[0]).write_text("1000000\n")
    (folder / names[1]).write_text("600000\n")
    (folder / "memory.stat").write_text(f"anon 500000\n{names[2]} 100000\n")
    assert _cgroup_room(proc, mount) == 1000000 - 600000 + 100000
    (folder / names[0]).write_text("max\n" if version == 2 else f"{1 << 62}\n")  # no limit
    assert _cgroup_room(proc, mount) is None


def test_a_spec_too_big_for_the_machine_is_refused_before_anything(setup, tmp_path, cli):
    (tmp_path / "huge.vgg").write_text(HUGE)
    out = tmp_path / "run"
    args = train_args(setup, out, f"spec={tmp_path / 'huge.vgg'}", "scale=256")
    code, _, err = cli(*args)
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith("not enough memory: training needs ")
    assert "(weights, gradients and momentum 1402.2 GiB" in err  # 3 x 467.4 GiB
    assert "try a smaller spec" in err
    assert not out.exists()  # no run folder


@pytest.mark.parametrize("short_of", ["activations", "weights"])
def test_a_normal_spec_on_a_small_machine_says_what_to_change(
    setup, tmp_path, cli, monkeypatch, short_of
):
    need = training_need(parse((setup / "tiny.vgg").read_text()), 8)
    memory = need.state + need.activations // 2 if short_of == "activations" else need.state // 2
    monkeypatch.setattr(resources, "available_bytes", lambda: memory)
    out = tmp_path / "run"
    # device=cpu: on a CUDA machine, auto would check the GPU's memory, not the RAM faked here
    code, _, err = cli(*train_args(setup, out, "max_steps=2", "device=cpu"))
    assert code == 2 and err.count("\n") == 1, err
    figures = f"{resources.size_text(need.memory)} (weights"
    assert figures in err and f"but only {resources.size_text(memory)} of RAM" in err
    assert ("try a smaller batch_size" in err) == (short_of == "activations")
    assert ("try a smaller spec" in err) == (short_of == "weights")
    assert not out.exists()


def test_processes_on_one_machine_share_its_memory():
    spec = parse(SPEC_32)
    need = training_need(spec, 4)
    check_training(spec, 4, 2, "cpu", "out", memory=2 * need.memory, disk=1 << 40)
    with pytest.raises(NotEnoughResources, match=r"for 2 processes .* or fewer --nproc"):
        check_training(spec, 4, 2, "cpu", "out", memory=2 * need.memory - 1, disk=1 << 40)


def test_a_disk_without_room_for_a_checkpoint_is_refused(setup, tmp_path, cli, monkeypatch):
    need = training_need(parse((setup / "tiny.vgg").read_text()), 8)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(resources.shutil, "disk_usage", lambda _: usage(1, 1, need.checkpoint - 1))
    out = tmp_path / "run"
    code, _, err = cli(*train_args(setup, out, "max_steps=2"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("not enough disk for a checkpoint: one needs ")
    assert f"{out}" in err and not out.exists()


def test_evaluation_too_big_for_the_memory_is_one_line(tmp_path, cli, monkeypatch):
    net = save_net(tmp_path / "m.safetensors", SPEC_32, 0)
    data = write_images(tmp_path / "d", {c: [(40, 40)] for c in CLASSES})
    need = resources.evaluation_need(parse(SPEC_32), 64)
    monkeypatch.setattr(resources, "available_bytes", lambda: need - 1)
    report = tmp_path / "report.json"
    args = ["run", "eval", "--checkpoint", net, "--data", data, "--workers", "0"]
    args += ["--device", "cpu"]  # the RAM faked here, not a GPU's memory
    code, _, err = cli(*args, "--scales", "40,64", "-o", report)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("not enough memory: evaluating needs ") and "at Q=64" in err
    assert not report.exists()
    assert cli(*args, "--scales", "40", "-o", report)[0] == 0  # a smaller scale fits


# -- memory measured before it is trusted ------------------------------------------------------

MIB = 1 << 20


def one_error_line(stderr: str) -> str:
    """The error of a run refused after its first log lines (the data it scanned, the memory
    it measured): the last line, and the only one that is not a timestamped log line."""
    lines = stderr.strip().splitlines()
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", line) for line in lines[:-1]), stderr
    assert "Traceback" not in stderr
    return lines[-1]


def _faked_probe(available: int):
    """A probe that measured 100 MiB at 4 images and 140 MiB at 8 (10 MiB an image on top
    of 60), an update of 120 MiB, with `available` bytes free: in place of memory_probe's
    measurement, whose figures depend on the machine."""
    from vggspec.runtime.train import memory_probe

    def measure(cfg, spec, classes, batch, device):
        return memory_probe.MemoryProbe(
            (4, 8), (100 * MIB, 140 * MIB), 120 * MIB, 0, available, 0, False, True
        )

    return measure


def test_the_probe_s_line_its_retained_heap_and_what_fits():
    from vggspec.runtime.train.memory_probe import RETAINED_HEAP, MemoryProbe, largest_batch

    probe = MemoryProbe((4, 8), (100 * MIB, 140 * MIB), 120 * MIB, 7, None, 0, False, True)
    # 60 MiB fixed, 10 MiB an image counted RETAINED_HEAP times, the loader's 7 bytes each
    assert probe.need(64) == int(60 * MIB + RETAINED_HEAP * 10 * MIB * 64) + 7 * 64
    assert probe.need(8) == int(60 * MIB + RETAINED_HEAP * 80 * MIB) + 56
    assert probe.need(2) == 140 * MIB + 14  # below the probe: its larger point
    plain = MemoryProbe((4, 8), (100 * MIB, 105 * MIB), 300 * MIB, 0, None, 0, False, False)
    assert plain.need(16) == 300 * MIB  # at small batches the optimizer's update is the peak
    assert plain.need(64) == 300 * MIB and plain.need(200) == (95 + 250) * MIB
    room = probe.need(50)
    assert largest_batch(probe, 1, room) == 50 and largest_batch(probe, 2, 2 * room) == 50
    assert largest_batch(probe, 1, room - 1) == 49
    assert MemoryProbe.margin(10 << 30, False) == (1 << 30) + (1 << 29)
    assert MemoryProbe.margin(10 << 30, True) == 1 << 30


@pytest.mark.parametrize("channels_last", [None, True, False])
def test_the_probe_trains_in_the_run_s_memory_layout(monkeypatch, channels_last):
    # The probe read `cfg.channels_last` itself: left out (null), as by default, it measured
    # NCHW where a bf16 or CUDA run trains NHWC (another conv algorithm, other workspaces).
    import torch
    from vggspec.runtime.train import memory_probe
    from vggspec.runtime.train.config import TrainConfig

    built = []
    real_build = memory_probe.build
    monkeypatch.setattr(memory_probe, "build", lambda *a: built.append(real_build(*a)) or built[-1])
    cfg = TrainConfig(precision="bf16", channels_last=channels_last, workers=0)
    cpu = torch.device("cpu")
    memory_probe._steps(cfg, parse(SPEC_32), len(CLASSES), cpu, (2, 4), 0)
    weight = built[0].conv1_1.weight
    nhwc = weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc == cfg.uses_channels_last(cpu) == (channels_last is not False)


def test_a_batch_the_measured_step_cannot_fit_is_refused_then_the_largest_that_fits_runs(
    setup, tmp_path, cli, monkeypatch
):
    # A at batch 256 passed the graph's estimate (14.0 GiB) and met the OOM killer past 20 GB.
    from vggspec.runtime.train import memory_probe

    # 780 MiB available: less the margin (78 MiB + 512 MiB), 190 MiB of room, where 8 images
    # need 60 + 1.75 x 80 = 200 MiB; the batch named leaves 5 % of 780 more (151 MiB), where
    # 7 need at most the 140 MiB measured at 8.
    monkeypatch.setattr(memory_probe, "measure", _faked_probe(780 * MIB))
    out = tmp_path / "run"
    code, _, err = cli(*train_args(setup, out, "max_steps=2", "device=cpu"))
    assert code == 2, err
    err = one_error_line(err)
    assert err.startswith("not enough memory: a training step at 8 images per process needs ")
    assert "200.0 MiB (forward and backward measured at 100.0 MiB for 4 images" in err
    assert "but only 780.0 MiB of RAM is available, less a margin of 590.0 MiB" in err
    assert err.rstrip().endswith("try batch_size=7 or less"), err
    assert not out.exists()
    # The faked figures are not this process's: no cap drawn from them (the test runner
    # itself may hold more than 780 MiB by now).
    monkeypatch.setenv("VGGSPEC_MEMORY_CAP", "0")
    code, _, err = cli(*train_args(setup, out, "max_steps=2", "device=cpu", "batch_size=7"))
    assert code == 0, err
    assert "memory: forward and backward took 100.0 MiB at 4 images and 140.0 MiB at 8" in err


def test_processes_of_one_machine_share_the_measured_room(setup, tmp_path, cli, monkeypatch):
    from vggspec.runtime.train import memory_probe

    monkeypatch.setattr(memory_probe, "measure", _faked_probe(900 * MIB))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # as a --nproc 2 worker sees it
    out = tmp_path / "run"
    code, _, err = cli(*train_args(setup, out, "max_steps=2", "device=cpu"))
    assert code == 2, err
    err = one_error_line(err)
    assert "for 2 processes" in err and "or fewer --nproc" in err, err
    assert not out.exists()


def test_past_its_memory_cap_a_run_stops_with_a_checkpoint_then_resumes_identically(
    setup, tmp_path, cli, monkeypatch
):
    from vggspec.runtime.io.checkpoint import load_checkpoint

    straight, capped = tmp_path / "straight", tmp_path / "capped"
    assert cli(*train_args(setup, straight, "max_steps=8"))[0] == 0
    monkeypatch.setenv("VGGSPEC_MEMORY_CAP", "1M")  # any Python process holds more
    # Without the probe: with it, a cap under the measured step is refused up front
    # (tests/test_refusals.py), and the watch is for a run that grows past its measure.
    monkeypatch.setenv("VGGSPEC_MEMORY_PROBE", "0")
    code, _, err = cli(*train_args(setup, capped, "max_steps=8"))
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vggspec: error: [Errno 12] memory: this process holds ")
    assert "past its cap of 1.0 MiB (VGGSPEC_MEMORY_CAP): stopped at step 1" in last
    assert f"continue with --resume {capped}" in last
    assert load_checkpoint(capped / "checkpoints" / "last.pt")["position"]["step"] == 1
    monkeypatch.delenv("VGGSPEC_MEMORY_CAP")
    monkeypatch.delenv("VGGSPEC_MEMORY_PROBE")
    code, _, err = cli("run", "train", "--resume", capped)
    assert code == 0, err
    a, b = (digest_of(run) for run in (straight, capped))
    assert a == b


def digest_of(run) -> str:
    import hashlib

    return hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()


def test_the_watch_calls_once_past_the_cap_and_a_bad_cap_is_one_line(monkeypatch):
    import threading

    from vggspec.compiler.errors import VggspecError
    from vggspec.runtime.dist.memory_watch import MemoryWatch, cap_from_environment

    seen, done = [], threading.Event()
    watch = MemoryWatch(1, lambda why: (seen.append(why), done.set()), interval_s=0.01).start()
    assert done.wait(5) and len(seen) == 1 and "past its cap of 1 B" in seen[0], seen
    watch.stop()
    # The machine running short (other processes grew): a floor above what is available.
    seen.clear(), done.clear()
    floor = 1 << 60
    watch = MemoryWatch(None, lambda why: (seen.append(why), done.set()), floor, 0.01).start()
    assert done.wait(5) and "of memory left, under 1073741824.0 GiB" in seen[0], seen
    watch.stop()
    for text, value in (("12G", 12 << 30), ("512M", 512 << 20), ("0", 0), ("1000", 1000)):
        monkeypatch.setenv("VGGSPEC_MEMORY_CAP", text)
        assert cap_from_environment() == value
    monkeypatch.setenv("VGGSPEC_MEMORY_CAP", "lots")
    with pytest.raises(VggspecError, match="VGGSPEC_MEMORY_CAP=lots: give a size"):
        cap_from_environment()


@pytest.mark.slow  # config A's probe: a warm-up step and steps at 4 and 8 images, ~30 s
def test_config_a_at_batch_256_is_refused_on_a_24_gib_machine(setup, tmp_path, cli, monkeypatch):
    # The report: the estimate passed it (14.0 GiB) and the process met the OOM killer past
    # 20 GB. Here 22 GiB are available (a 24 GiB machine at rest), measured for real.
    from vggspec.runtime.train import memory_probe

    monkeypatch.setattr(resources, "available_bytes", lambda: 22 << 30)
    monkeypatch.setattr(memory_probe, "available_bytes", lambda: 22 << 30)
    from vggspec.runtime.data.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", seed=0, train_per_class=26, val_per_class=1)
    out = tmp_path / "run"
    args = ["spec=specs/A.vgg", f"data={data}", "batch_size=256", "scale=256", "device=cpu"]
    code, _, err = cli(*train_args(setup, out, *args))  # the later key=value words win
    assert code == 2, err
    err = one_error_line(err)
    assert err.startswith("not enough memory: a training step at 256 images per process needs")
    fits = int(re.search(r"try batch_size=(\d+) or less", err)[1])
    assert 128 <= fits < 256 and fits % 8 == 0
    assert not out.exists()
