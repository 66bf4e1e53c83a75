"""The `auto` backend's autotuner on the CPU (Triton interpreter, injected timer): it keeps
the faster side, never a failing or disagreeing kernel, reuses its cache, drops it when
versions change, and every rank of a process group takes rank 0's choice."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import two_ranks
from vggspec.compiler import compile_spec, load_spec
from vggspec.compiler.lowering import backends
from vggspec.compiler.lowering.autotune import Autotuner
from vggspec.compiler.lowering.autotune_cache import DecisionCache
from vggspec.compiler.lowering.backends import auto, triton_kernels
from vggspec.compiler.lowering.net import init_weights, lower

ROOT = Path(__file__).resolve().parent.parent
ENV = {"gpu": "Test GPU", "torch": "2.11.0", "triton": "3.6.0", "kernels": "0123456789ab"}


def fixed_timer(triton_ms: float, torch_ms: float, calls: list | None = None):
    """A timer that runs nothing and reports the given milliseconds per side."""

    def timer(side, fn):
        if calls is not None:
            calls.append(side)
        return {"triton": triton_ms, "torch": torch_ms}[side]

    return timer


def no_timing(side, fn):
    raise AssertionError(f"measured {side} again: the cached decision should have been used")


def tuner(path, timer, env=ENV) -> Autotuner:
    return Autotuner(DecisionCache(path), timer, dict(env))


def conv_inputs(grad: bool = True):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 6, 7, generator=g).contiguous(memory_format=torch.channels_last)
    w = 0.3 * torch.randn(6, 5, 3, 3, generator=g)
    b = torch.randn(6, generator=g)
    return [t.requires_grad_(grad) for t in (x, w, b)]


def run_conv(backend, grad=True):
    x, w, b = conv_inputs(grad)
    y = backend.conv(x, w, b, (1, 1), True)
    want = F.relu(F.conv2d(x, w, b, padding=1))
    assert (y - want).abs().max().item() < 1e-4
    return y


@pytest.mark.parametrize("triton_ms, torch_ms, want", [(1.0, 2.0, "triton"), (3.0, 2.0, "torch")])
def test_the_faster_side_is_chosen_and_recorded(tmp_path, triton_ms, torch_ms, want):
    calls = []
    backend = auto.Backend(tuner(tmp_path / "at.json", fixed_timer(triton_ms, torch_ms, calls)))
    run_conv(backend)
    ((signature, choice),) = backend.tuner.chosen.items()
    assert choice == want and sorted(calls) == ["torch", "triton"]
    assert signature == "conv fp32[2x5x6x7]cl fp32[6x5x3x3] fp32[6] 1x1 True fp32 fwd+bwd"
    data = json.loads((tmp_path / "at.json").read_text())
    (section,) = data["environments"].values()
    assert section[signature]["choice"] == want
    assert section[signature]["error"] < 1e-4  # both sides were run and compared


def test_forward_only_calls_have_their_own_signature(tmp_path):
    backend = auto.Backend(tuner(tmp_path / "at.json", fixed_timer(1.0, 2.0)))
    with torch.no_grad():
        run_conv(backend, grad=False)
    run_conv(backend, grad=True)
    assert sorted(s.rsplit(" ", 1)[1] for s in backend.tuner.chosen) == ["fwd", "fwd+bwd"]


def test_a_disagreeing_kernel_is_never_chosen(tmp_path, monkeypatch, caplog):
    real = triton_kernels.Backend.conv

    def off_by_a_bit(self, *args):
        return real(self, *args) * 1.01  # 1e-2 relative: far past fp32's 1e-4

    monkeypatch.setattr(triton_kernels.Backend, "conv", off_by_a_bit)
    backend = auto.Backend(tuner(tmp_path / "at.json", fixed_timer(0.001, 1000.0)))
    with caplog.at_level(logging.WARNING, logger="vggspec.autotune"):
        run_conv(backend)
        run_conv(backend)
    assert list(backend.tuner.chosen.values()) == ["torch"]
    (record,) = caplog.records
    assert "disagrees" in record.getMessage() and "\n" not in record.getMessage()


def test_a_failing_kernel_falls_back_to_torch_without_a_crash(tmp_path, monkeypatch, caplog):
    def broken(self, *args):
        raise RuntimeError("PTX compile failed\nwith a long log")

    monkeypatch.setattr(triton_kernels.Backend, "conv", broken)
    backend = auto.Backend(tuner(tmp_path / "at.json", fixed_timer(0.001, 1000.0)))
    with caplog.at_level(logging.WARNING, logger="vggspec.autotune"):
        run_conv(backend)
    assert list(backend.tuner.chosen.values()) == ["torch"]
    (record,) = caplog.records
    assert record.getMessage().endswith("triton failed: RuntimeError: PTX compile failed")
    # The failure is remembered: a later process neither measures nor warns again.
    caplog.clear()
    again = auto.Backend(tuner(tmp_path / "at.json", no_timing))
    run_conv(again)
    assert list(again.tuner.chosen.values()) == ["torch"] and not caplog.records


def test_a_fault_seen_at_the_synchronisation_is_a_torch_choice(tmp_path, monkeypatch, caplog):
    """An asynchronous device fault (an illegal address) surfaces at the next
    synchronisation: the trial synchronises inside its guard, so it is a torch choice."""
    from vggspec.compiler.lowering import autotune

    calls = []

    def synchronize(device=None):
        calls.append(device)
        if len(calls) == 2:  # after the triton side (the torch side runs first)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(autotune, "_synchronize", synchronize)
    backend = auto.Backend(tuner(tmp_path / "at.json", fixed_timer(0.001, 1000.0)))
    with caplog.at_level(logging.WARNING, logger="vggspec.autotune"):
        run_conv(backend)
    assert list(backend.tuner.chosen.values()) == ["torch"]
    assert all(d == torch.device("cpu") for d in calls[:2])  # the tensors' device
    (record,) = caplog.records
    assert "triton failed: RuntimeError: CUDA error: an illegal memory access" in (
        record.getMessage()
    )


def test_a_cached_failure_is_tried_again_when_the_kernels_change(tmp_path, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("out of resources: shared memory")

    path = tmp_path / "at.json"
    with monkeypatch.context() as patch:
        patch.setattr(triton_kernels.Backend, "conv", broken)
        run_conv(auto.Backend(tuner(path, fixed_timer(0.001, 1000.0))))
    (section,) = json.loads(path.read_text())["environments"].values()
    (decision,) = section.values()
    assert decision["choice"] == "torch" and "out of resources" in decision["why"]
    # Same kernels: the failure holds, nothing is measured. Changed kernels: measured again.
    same = auto.Backend(tuner(path, no_timing))
    run_conv(same)
    assert list(same.tuner.chosen.values()) == ["torch"]
    fixed = auto.Backend(tuner(path, fixed_timer(1.0, 2.0), {**ENV, "kernels": "fedcba987654"}))
    run_conv(fixed)
    assert fixed.tuner.measured == 1 and list(fixed.tuner.chosen.values()) == ["triton"]


def test_the_decision_key_carries_the_kernels_version():
    from vggspec.compiler.kernels.version import kernels_version
    from vggspec.compiler.lowering.autotune import current_environment

    version = kernels_version()
    assert len(version) == 12 and int(version, 16) >= 0
    assert current_environment(torch.device("cpu"))["kernels"] == version


def test_the_cache_is_reused_and_dropped_when_versions_change(tmp_path):
    path = tmp_path / "at.json"
    first = auto.Backend(tuner(path, fixed_timer(1.0, 2.0)))
    run_conv(first)
    run_conv(first)
    assert first.tuner.measured == 1  # in memory

    reused = auto.Backend(tuner(path, no_timing))  # another process, same versions
    run_conv(reused)
    assert reused.tuner.measured == 0 and list(reused.tuner.chosen.values()) == ["triton"]

    newer = auto.Backend(tuner(path, fixed_timer(3.0, 2.0), {**ENV, "triton": "3.7.0"}))
    run_conv(newer)
    assert newer.tuner.measured == 1 and list(newer.tuner.chosen.values()) == ["torch"]
    sections = json.loads(path.read_text())["environments"]
    assert list(sections) == ["Test GPU | torch 2.11.0 | triton 3.7.0 | kernels 0123456789ab"]


def test_another_gpu_model_is_measured_apart(tmp_path):
    path = tmp_path / "at.json"
    run_conv(auto.Backend(tuner(path, fixed_timer(1.0, 2.0))))
    other = auto.Backend(tuner(path, fixed_timer(3.0, 2.0), {**ENV, "gpu": "Other GPU"}))
    run_conv(other)
    assert other.tuner.measured == 1 and list(other.tuner.chosen.values()) == ["torch"]
    assert len(json.loads(path.read_text())["environments"]) == 2


def test_a_corrupt_cache_file_is_measured_over(tmp_path):
    path = tmp_path / "at.json"
    path.write_text("{not json")
    backend = auto.Backend(tuner(path, fixed_timer(1.0, 2.0)))
    run_conv(backend)
    assert backend.tuner.measured == 1
    assert json.loads(path.read_text())["format"] == 1


def test_a_whole_net_trains_through_auto_like_torch(tmp_path, one_thread):
    """Every dispatched call (conv, pool, linear, loss) runs, is measured once, and the
    net's loss and gradients match the torch backend's."""
    torch.manual_seed(0)
    spec = tmp_path / "tiny.vgg"
    spec.write_text("input 8x8 RGB\nconv3-4 conv3-6 maxpool\nFC-6 FC-5 soft-max\n")
    graph = compile_spec(load_spec(spec))
    reference = init_weights(lower(graph, "torch", dropout=0.0), "glorot")
    net = lower(graph, "torch", dropout=0.0)
    net.load_state_dict(reference.state_dict())
    net.backend = auto.Backend(tuner(tmp_path / "at.json", fixed_timer(1.0, 2.0)))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 4])
    losses = []
    for model in (net, reference):
        loss = model.loss(model(x), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max() <= 1e-4 * q.grad.abs().max(), name
    kinds = sorted({s.split()[0] for s in net.backend.tuner.chosen})
    assert kinds == ["conv", "cross_entropy", "linear", "max_pool"]
    assert set(net.backend.tuner.chosen.values()) == {"triton"}


def test_auto_without_cuda_is_the_torch_backend():
    if torch.cuda.is_available():
        pytest.skip("measures on a CUDA machine")
    assert backends.resolve("auto") == "torch"
    assert backends.get_backend("auto").name == "torch"
    assert backends.resolve("triton") == "triton" and backends.resolve("torch") == "torch"


_WRITER = """
import sys
from vggspec.compiler.lowering.autotune_cache import DecisionCache
cache, who = DecisionCache(sys.argv[1]), sys.argv[2]
env = {"gpu": "g", "torch": "t", "triton": "r", "kernels": "k"}
for i in range(30):
    cache.store(env, f"{who}-{i}", {"choice": "torch"})
    cache.store(env, "shared", {"choice": who})
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "at.json"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), who], cwd=ROOT)
        for who in ("a", "b", "c")
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    (entries,) = json.loads(path.read_text())["environments"].values()
    assert len(entries) == 3 * 30 + 1  # no write lost another's entries
    assert not list(tmp_path.glob("*.tmp"))


_RANK = """
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch, torch.distributed as dist
rank, port, cache, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                        world_size=2, timeout=__import__("datetime").timedelta(seconds=60))
try:
    from vggspec.compiler.lowering.autotune import Autotuner
    from vggspec.compiler.lowering.autotune_cache import DecisionCache
    from vggspec.compiler.lowering.backends import auto
    # Each rank's own timer disagrees with the other's: rank 0's must win everywhere.
    ms = {"triton": 1.0, "torch": 2.0} if rank == 0 else {"triton": 2.0, "torch": 1.0}
    class Broken(DecisionCache):
        def store(self, env, signature, decision):
            raise OSError("No space left on device")

    store = Broken if mode == "broken-on-rank-0" and rank == 0 else DecisionCache
    tuner = Autotuner(store(f"{cache}.{rank}"), lambda side, fn: ms[side],
                      {"gpu": "g", "torch": "t", "triton": "r", "kernels": "k"})
    backend = auto.Backend(tuner)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 6, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, 4, 3, 3, generator=g), torch.randn(3, generator=g)
    backend.max_pool(x.requires_grad_())
    backend.conv(x, w.requires_grad_(), b.requires_grad_(), (1, 1), False)
    training = dict(tuner.chosen)
    # Evaluation: each rank its own images, so its own shapes; no collective, no hang,
    # and no measurement.
    with torch.no_grad():
        backend.max_pool(torch.randn(1, 2, 2 + 2 * rank, 4))
    evaluation = {s: c for s, c in tuner.chosen.items() if s not in training}
    print(json.dumps({"chosen": training, "evaluation": evaluation, "measured": tuner.measured}))
finally:
    dist.destroy_process_group()
"""


def _two_ranks(tmp_path, mode: str) -> list[dict]:
    return two_ranks(_RANK, tmp_path / "at.json", mode, timeout=180)


def test_every_rank_takes_rank_zeros_training_choices(tmp_path):
    zero, one = _two_ranks(tmp_path, "plain")
    assert zero["chosen"] == one["chosen"] and len(zero["chosen"]) == 2
    assert all(s.endswith("fwd+bwd") for s in zero["chosen"])
    assert set(zero["chosen"].values()) == {"triton"}
    # Evaluation: no rank measures (nothing cached yet): torch on every rank, whatever
    # each rank's own timer would say.
    assert list(zero["evaluation"].values()) == ["torch"]
    assert list(one["evaluation"].values()) == ["torch"]
    assert zero["evaluation"].keys() != one["evaluation"].keys()
    assert zero["measured"] == 2 and one["measured"] == 0  # rank 0: the training calls only


def test_a_failure_on_rank_zero_is_broadcast_as_torch(tmp_path):
    """Rank 0 cannot record its decision (a full disk): it still broadcasts, torch, and no
    rank is left waiting."""
    zero, one = _two_ranks(tmp_path, "broken-on-rank-0")
    assert zero["chosen"] == one["chosen"] and len(zero["chosen"]) == 2
    assert set(zero["chosen"].values()) == {"torch"}


def test_precision_follows_autocast_for_gemms_only():
    x = torch.randn(1, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert auto.precision_of("conv", (x,)) == "bf16"
        assert auto.precision_of("linear", (x,)) == "bf16"
        assert auto.precision_of("max_pool", (x,)) == "fp32"
    assert auto.precision_of("conv", (x.bfloat16(),)) == "bf16"
    assert auto.precision_of("conv", (x,)) == "fp32"


def test_compile_reports_what_auto_would_measure():
    """D's 13 conv layers are 9 distinct calls (conv3_2 and conv3_3 share one, …)."""
    from vggspec.compiler.lowering.auto_calls import auto_calls, describe_auto_calls
    from vggspec.compiler.lowering.launches import graph_launches

    launches, _ = graph_launches(compile_spec(load_spec(ROOT / "specs" / "D.vgg")), 64)
    calls = auto_calls(launches)
    assert len(calls) == 18 and calls[0] == "conv 64x3x224x224 -> 64 k3x3 p1x1 relu"
    assert calls.count("conv 64x512x14x14 -> 512 k3x3 p1x1 relu") == 1
    assert calls[-1] == "cross_entropy 64x1000"
    line = describe_auto_calls(launches, training=True)
    assert line.startswith(
        "backend auto measures 18 distinct calls on first use "
        "(conv 9, max_pool 5, linear 3, cross_entropy 1)"
    )


def test_measuring_stops_after_a_budget(tmp_path, caplog):
    """Images of many sizes must not each cost a measurement: past the budget, torch."""
    backend = auto.Backend(
        Autotuner(DecisionCache(tmp_path / "at.json"), fixed_timer(1.0, 2.0), ENV, 2)
    )
    with caplog.at_level(logging.WARNING, logger="vggspec.autotune"):
        for size in (4, 6, 8, 10):
            backend.max_pool(torch.randn(1, 2, size, size))
    assert list(backend.tuner.chosen.values()) == ["triton", "triton", "torch", "torch"]
    (record,) = caplog.records
    assert "2 call signatures measured" in record.getMessage()
