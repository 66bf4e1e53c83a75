"""The evaluation's read-ahead thread and its images decoded once for every scale: the same
results, the same bad files, and never a hang (a failing producer, a failing caller, Ctrl-C);
the numpy preprocessing it runs is torch's."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from eval_helpers import SPEC_32, save_net, write_images
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.data.prefetch import prefetched
from vggspec.runtime.data.preprocessing import Preprocessing
from vggspec.runtime.eval import images as images_module
from vggspec.runtime.eval import scale_passes as scale_passes_module
from vggspec.runtime.eval.classes import class_order
from vggspec.runtime.eval.classify import evaluate as evaluate_module
from vggspec.runtime.eval.classify.evaluate import evaluate
from vggspec.runtime.eval.classify.protocol import settings_for
from vggspec.runtime.eval.images import ScaledImages
from vggspec.runtime.eval.models import load_checkpoint_model
from vggspec.runtime.eval.scale_passes import PassSettings, scale_passes

pytestmark = pytest.mark.usefixtures("one_thread")


def producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vggspec-prefetch"]


def test_items_come_in_order_at_most_depth_ahead(alarm):
    made, ahead = [], []

    def items():
        for i in range(50):
            made.append(i)
            yield i

    got = []
    for item in prefetched(items(), depth=2):
        time.sleep(0.002)  # a slow caller: the producer fills the queue and waits
        ahead.append(len(made) - len(got))
        got.append(item)
    assert got == list(range(50))
    # The queue holds 2, the producer holds one more it cannot put yet, the caller has one.
    assert max(ahead) <= 4
    assert not producers()


def test_depth_0_makes_the_items_in_this_thread():
    where = []

    def items():
        for i in range(3):
            where.append(threading.current_thread())
            yield i

    assert list(prefetched(items(), depth=0)) == [0, 1, 2]
    assert where == [threading.current_thread()] * 3


def test_a_producer_error_comes_after_the_items_made_before_it(alarm):
    def items():
        yield from range(3)
        raise ValueError("broken file system")

    got = []
    with pytest.raises(ValueError, match="broken file system"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [0, 1, 2]
    assert not producers()


@pytest.mark.parametrize("stop", ["break", "error", "interrupt"])
def test_a_caller_that_stops_stops_the_producer(alarm, stop):
    finished = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            finished.set()

    stream = prefetched(endless())
    with pytest.raises((RuntimeError, KeyboardInterrupt)) if stop != "break" else nullcontext():
        for item in stream:
            if item == 5:
                if stop == "break":
                    break
                raise RuntimeError("the net failed") if stop == "error" else KeyboardInterrupt
    stream.close()  # what `closing` in scale_passes does as the caller's loop ends
    assert not producers()
    assert finished.wait(5)  # the producer's generator was left and closed


def test_ctrl_c_while_waiting_for_a_slow_producer_ends_promptly(alarm):
    def slow():
        while True:
            time.sleep(0.3)  # a large batch being decoded
            yield 0

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)  # arrives while the caller waits in get()
        started = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            for _ in prefetched(slow()):
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.perf_counter() - started < 5  # the batch at hand, then the join
    assert not producers()


# -- through evaluate ---------------------------------------------------------------------


@pytest.fixture
def case(tmp_path):
    """Two nets (fusion), 18 images of 3 sizes, one of them corrupted after the scan."""
    shapes = [(40, 40), (50, 38), (36, 60)]
    data = write_images(tmp_path, {c: shapes * 2 for c in "abc"})
    folder = scan_image_folder(data, "val")
    broken = folder.samples[7][0]
    with open(broken, "wb") as f:
        f.write(b"garbage")
    models = [
        load_checkpoint_model(save_net(tmp_path / f"m{s}.st", SPEC_32, s), "torch") for s in (1, 2)
    ]
    names, orders = class_order(models, folder.classes)
    return models, orders, names, folder, broken


def _run(case, caplog, **settings):
    models, orders, names, folder, _ = case
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ev = evaluate(models, orders, names, folder, settings_for("all", **settings))
    return ev, [r.getMessage() for r in caplog.records if "leaving out" in r.getMessage()]


def test_prefetch_and_kept_images_change_nothing_bit_for_bit(case, caplog, alarm, monkeypatch):
    where, decoded = [], []
    real_item, real_load = ScaledImages.__getitem__, images_module.load_rgb

    def item(self, index):
        where.append(threading.current_thread().name)
        return real_item(self, index)

    def load(path, *args):
        decoded.append(path)
        return real_load(path, *args)

    monkeypatch.setattr(ScaledImages, "__getitem__", item)
    monkeypatch.setattr(images_module, "load_rgb", load)
    ahead, said_ahead = _run(case, caplog, max_images=4)  # several batches per size
    assert set(where) == {"vggspec-prefetch"}
    # Each image decoded once for the 3 scales; the corrupt one tried at each.
    broken = case[4]
    assert len(decoded) == 17 + 3 and decoded.count(broken) == 3
    where.clear(), decoded.clear()
    here, said_here = _run(case, caplog, max_images=4, prefetch=False, keep_decoded=0)
    assert set(where) == {"MainThread"} and len(decoded) == 3 * 18
    assert ahead.readable.tolist() == here.readable.tolist()
    assert (~ahead.readable).sum() == 1 and not ahead.readable[7]
    for got, want in (
        (ahead.dense, here.dense),
        (ahead.crops, here.crops),
        (ahead.single, here.single),
    ):
        assert got.keys() == want.keys() and got
        for i in want:
            assert np.array_equal(got[i], want[i])
    # The corrupt file: once a scale, the same words either way.
    assert said_ahead == said_here and len(said_ahead) == 3
    assert all(m.startswith(f"leaving out {broken}: ") for m in said_ahead)
    assert not producers()


def test_a_failing_net_mid_stream_raises_and_leaves_no_thread(case, caplog, alarm, monkeypatch):
    calls = []
    real = evaluate_module.dense_posteriors

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "dense_posteriors", failing)
    with pytest.raises(RuntimeError, match="out of memory") as raised:
        _run(case, caplog, max_images=2)
    # Stopped and joined as the error left evaluate, not later when its traceback (which
    # holds evaluate's frame, so the batches' generator) is let go.
    assert raised.traceback and not producers()


def test_on_a_gpu_the_thread_only_reads_and_the_inputs_are_made_here(case, alarm, monkeypatch):
    """Off the CPU, the device copy and the nets' inputs are made on the calling thread (the
    thread reads and decodes, and pins nothing): no CUDA work from a second thread. The
    "meta" device stands in for a GPU here, as a device that is not the CPU."""
    models, _, _, folder, _ = case
    made_on, decoded_on = [], []
    real_call, real_item = Preprocessing.__call__, ScaledImages.__getitem__

    def call(self, images):
        made_on.append((threading.current_thread().name, images.device.type))
        return real_call(self, images)

    def item(self, index):
        decoded_on.append(threading.current_thread().name)
        return real_item(self, index)

    monkeypatch.setattr(Preprocessing, "__call__", call)
    monkeypatch.setattr(ScaledImages, "__getitem__", item)
    # On a machine with CUDA the loader pinned each batch, in the thread that iterates it.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pinned, real_loader = [], scale_passes_module.make_loader

    def loader(*args, **kwargs):
        made = real_loader(*args, **kwargs)
        pinned.append(made.pin_memory)
        return made

    monkeypatch.setattr(scale_passes_module, "make_loader", loader)
    settings = PassSettings(max_images=4)
    passes = scale_passes(
        models, folder, range(len(folder)), settings, torch.device("meta"), copies=1, inputs=True
    )
    with contextlib.closing(passes) as batches:
        first = next(batches)
        assert first.pixels.device.type == "meta"
        assert all(x.device.type == "meta" for x in first.inputs.values())
    assert set(made_on) == {("MainThread", "meta")}
    assert set(decoded_on) == {"vggspec-prefetch"}
    assert pinned and not any(pinned)  # no CUDA call in the thread
    assert not producers()  # closed with the passes


def torch_preprocessing(p: Preprocessing, images: torch.Tensor) -> torch.Tensor:
    """What `Preprocessing.__call__` computed in torch before it used numpy on the CPU."""
    x = images.float()
    if p.pixel_factor != 1.0:
        x = x * p.pixel_factor
    x = x - torch.tensor(p.mean_rgb, dtype=torch.float32)[:, None, None]
    if p.std_rgb != (1.0, 1.0, 1.0):
        x = x / torch.tensor(p.std_rgb, dtype=torch.float32)[:, None, None]
    return x.flip(1) if p.bgr else x


@pytest.mark.parametrize(
    "convention",
    [
        Preprocessing.trained([126.8, 125.8, 124.9], [73.82, 74.09, 74.34]),
        Preprocessing.trained([123.7, 116.8, 103.9]),
        Preprocessing.caffe(),
        Preprocessing.torchvision(),
    ],
    ids=["mean-std", "mean", "caffe", "torchvision"],
)
def test_numpy_preprocessing_is_torchs_bit_for_bit(convention):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (5, 3, 17, 23), generator=generator, dtype=torch.uint8)
    pixels[0, :, 0, :3] = torch.tensor([0, 255, 128], dtype=torch.uint8)
    got = convention(pixels)
    want = torch_preprocessing(convention, pixels)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, want)
    assert torch.equal(convention(pixels[2:3])[0], convention.image(pixels[2].permute(1, 2, 0)))
