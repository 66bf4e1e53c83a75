"""Memory and disk checked before any work: a job that cannot fit is one line, exit 2, and
nothing written; the estimate is `vggspec compile`'s figures."""

from __future__ import annotations

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
