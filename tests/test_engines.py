"""Inference engines for evaluation and features: each against torch, `auto` (agreement
first, then the fastest), the exported model's cache, and a user without the extras."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import onnx
import pytest
import torch
from eval_helpers import SPEC_32, save_net, write_images
from helpers import ROOT, two_ranks, vggspec_cmd
from vggspec.compiler.lowering import inference
from vggspec.runtime.eval import engines
from vggspec.runtime.eval.engines import exported, serving
from vggspec.runtime.eval.engines.serving import Serving
from vggspec.runtime.eval.models import load_checkpoint_model

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
NO_OPENVINO = "openvino is not installed (pip install 'vggspec[openvino]')"


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """Exported models go to this test's folder, not the user's cache."""
    monkeypatch.setenv("VGGSPEC_ENGINE_CACHE", str(tmp_path / "engines"))
    return tmp_path / "engines"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    shapes = [(40, 40), (50, 38), (36, 60)]
    data = write_images(root / "data", {c: shapes for c in "abcdef"})
    run = root / "run"
    run.mkdir()
    save_net(run / "model.safetensors", SPEC_32, 3, spec_dir=root)
    return data, run


def relative_error(got, reference) -> float:
    return float((got - reference).abs().max() / reference.abs().max())


# OpenVINO runs in processes of its own here: its runtime loaded into the test process made
# a later in-process torchrun launch (test_eval_cli's two-process cases) die of SIGSEGV. The
# command line never loads it in a launcher: only the workers compile their engines.
def engine_agrees(run, name, precision, tolerance):
    """The engine's dense twin and classifier against torch's, on the saved net of `run`."""
    model = load_checkpoint_model(run, "torch")
    served = Serving(name, precision)
    torch.manual_seed(0)
    checks = (
        (model.twin, torch.randn(3, 3, 44, 60) * 40),
        (model.net, torch.randn(5, 3, 32, 32) * 40),
    )
    for net, x in checks:
        with torch.no_grad():
            reference = net(x)
        engine_net = served.serve(net, x[:1])
        got = engine_net(x)
        assert got.dtype == torch.float32 and got.shape == reference.shape
        assert relative_error(got, reference) < tolerance
        assert torch.equal(engine_net.predict(x).argmax(1), net.predict(x).argmax(1))
    assert served.label == f"{name} {precision}"


@pytest.mark.parametrize(
    "name, precision, tolerance",
    [("onnxruntime", "fp32", 1e-5), ("torch", "bf16", 2e-2), ("torch", "fp32", 1e-12)],
)
def test_each_engine_computes_the_twin_and_classifier_as_torch(setup, name, precision, tolerance):
    engine_agrees(setup[1], name, precision, tolerance)


def openvino_as_one_request(run, precision):
    """The engine splits a batch over its streams: its outputs are, bit for bit, those of
    one request of the whole batch on a model compiled with OpenVINO's defaults, for every
    split (even, uneven, a batch of one that is not split) and thread count."""
    import openvino
    from vggspec.runtime.eval.engines import openvino_engine

    model = load_checkpoint_model(run, "torch")
    torch.manual_seed(0)
    for net, shape in ((model.twin, (3, 44, 60)), (model.net, (3, 32, 32))):
        path = str(exported.exported_onnx(net))
        hint = openvino_engine.HINTS[precision]
        alone = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        request = alone.create_infer_request()
        for threads in (2, 1):
            run_net = openvino_engine.compile(net, precision, threads)
            for n in (1, 2, 3, 4):
                x = torch.randn(n, *shape) * 40
                reference = torch.from_numpy(np.array(request.infer({0: x.numpy()})[0]))
                assert torch.equal(run_net(x), reference), (precision, threads, n)


@pytest.mark.skipif(not HAS_OPENVINO, reason=NO_OPENVINO)
def test_openvino_in_a_process_of_its_own(setup, engine_cache):
    code = (
        "import sys; sys.path.insert(0, 'tests'); "
        "from test_engines import engine_agrees, openvino_as_one_request; "
        f"engine_agrees({str(setup[1])!r}, 'openvino', 'fp32', 1e-5); "
        f"engine_agrees({str(setup[1])!r}, 'openvino', 'bf16', 2e-2); "
        f"openvino_as_one_request({str(setup[1])!r}, 'fp32'); "
        f"openvino_as_one_request({str(setup[1])!r}, 'bf16'); print('agreed')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "agreed", done.stderr[-3000:]


def test_the_exported_model_is_kept_per_net(setup, engine_cache, monkeypatch):
    _, run = setup
    model = load_checkpoint_model(run, "torch")
    calls = []
    export = exported.export_onnx
    monkeypatch.setattr(
        exported, "export_onnx", lambda net, path: calls.append(path) or export(net, path)
    )
    first = exported.exported_onnx(model.twin)
    assert exported.exported_onnx(model.twin) == first and len(calls) == 1  # from the cache
    classifier = exported.exported_onnx(model.net)
    assert classifier != first  # the classifier is another model
    other = load_checkpoint_model(run, "torch")
    with torch.no_grad():
        other.twin.fc5.bias.add_(1.0)  # other weights: another digest
    changed = exported.exported_onnx(other.twin)
    assert changed != first
    assert len(calls) == 3
    kept = sorted(p.name for p in engine_cache.iterdir())
    assert kept == sorted(p.name for p in (first, classifier, changed))  # nothing else


def fake_engine(name: str, delay: float, wrong: bool = False, setup: float = 0.0, fails=None):
    """An engine that computes torch's answer (or a wrong one), taking `delay` seconds (and
    `setup` more on its first run); `fails`: what its compile raises."""

    def compile(net, precision, threads):
        if fails is not None:
            raise fails
        calls = []

        def run(x):
            time.sleep(delay + (0.0 if calls else setup))
            calls.append(1)
            y = net(x)
            return y + 1.0 if wrong else y

        return run

    return types.SimpleNamespace(
        NAME=name, PACKAGE=name, EXTRA=name, PRECISIONS=("fp32",), compile=compile
    )


def test_auto_keeps_the_fastest_engine_that_agrees(setup, monkeypatch):
    _, run = setup
    model = load_checkpoint_model(run, "torch")
    fakes = {
        "slow": fake_engine("slow", 0.05),
        "fast": fake_engine("fast", 0.0),
        "wrong": fake_engine("wrong", 0.0, wrong=True),  # fastest of all, but disagrees
    }
    monkeypatch.setattr(serving, "installed", lambda: ["slow", "wrong", "fast"])
    monkeypatch.setattr(serving, "engine", fakes.__getitem__)
    heard = []
    served = Serving("auto", "fp32").serve(model.twin, torch.randn(2, 3, 40, 40), heard.append)
    assert served.label == "fast fp32"
    (line,) = heard
    assert line.startswith("engine auto: fast fp32") and "wrong fp32 disagrees" in line


def test_auto_judges_an_engine_after_its_first_run(setup, monkeypatch):
    """An engine that sets up on its first run (oneDNN's kernels, OpenVINO's lazy compile)
    and is then the fastest is chosen: the first run is not its speed."""
    _, run = setup
    model = load_checkpoint_model(run, "torch")
    fakes = {"steady": fake_engine("steady", 0.03), "late": fake_engine("late", 0.0, setup=0.3)}
    monkeypatch.setattr(serving, "installed", lambda: ["steady", "late"])
    monkeypatch.setattr(serving, "engine", fakes.__getitem__)
    served = Serving("auto", "fp32").serve(model.twin, torch.randn(2, 3, 40, 40))
    assert served.label == "late fp32"


def test_auto_times_a_gpu_run_to_its_end(monkeypatch):
    """On a GPU a run returns once its kernels are launched: the time until they are done
    (here: 0.2 s of queued work) is what is measured."""
    queued = []
    monkeypatch.setattr(
        torch.cuda, "synchronize", lambda device=None: queued and time.sleep(queued.pop())
    )
    on_gpu = types.SimpleNamespace(device=torch.device("cuda"))
    assert serving._seconds(lambda x: queued.append(0.2), on_gpu) >= 0.2


def test_auto_passes_over_an_engine_that_cannot_run(setup, monkeypatch):
    _, run = setup
    model = load_checkpoint_model(run, "torch")
    cannot = engines.EngineError("cannot keep the exported model in /x (Read-only file system)")
    fakes = {"fast": fake_engine("fast", 0.0, fails=cannot), "slow": fake_engine("slow", 0.02)}
    monkeypatch.setattr(serving, "installed", lambda: ["fast", "slow"])
    monkeypatch.setattr(serving, "engine", fakes.__getitem__)
    heard = []
    served = Serving("auto", "fp32").serve(model.twin, torch.randn(2, 3, 40, 40), heard.append)
    assert served.label == "slow fp32"
    (line,) = heard
    assert "fast fp32 failed: cannot keep the exported model in /x" in line


def test_auto_runs_where_no_export_can_be_kept(setup, cli, tmp_path, monkeypatch):
    """A cache folder that cannot be made (here: a file is in its way; a read-only home
    does the same): `--engine auto` computes on torch and says why, where a named engine
    is one line and exit 2."""
    data, run = setup
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    monkeypatch.setenv("VGGSPEC_ENGINE_CACHE", str(blocked / "engines"))
    monkeypatch.setattr(serving, "installed", lambda: ["torch", "onnxruntime"])
    report = tmp_path / "report.json"
    code, _, err = cli(
        "run", "eval", "--checkpoint", run, *common(data), "--engine", "auto", "-o", report
    )  # fmt: skip
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "engine auto:" in x]
    assert "onnxruntime fp32 failed: cannot keep the exported model" in line
    assert json.loads(report.read_text())["nets"][0]["engine"] == "torch fp32"
    code, _, err = cli("run", "eval", "--checkpoint", run, *common(data), "--engine", "onnxruntime")
    assert code == 2 and "cannot keep the exported model" in err and "Traceback" not in err


def test_each_net_of_a_fusion_says_its_own_choice(setup, tmp_path, monkeypatch):
    data, run = setup
    other = save_net(tmp_path / "other.safetensors", SPEC_32, 5, spec_dir=tmp_path)
    fakes = {"slow": fake_engine("slow", 0.5), "fast": fake_engine("fast", 0.0)}
    monkeypatch.setattr(serving, "installed", lambda: ["slow", "fast"])
    monkeypatch.setattr(serving, "engine", fakes.__getitem__)
    from vggspec.runtime.eval.classify.evaluate import single_process
    from vggspec.runtime.eval.classify.job import run_evaluation
    from vggspec.runtime.eval.requests import EvalRequest, ImagesRequest, NetsRequest

    request = EvalRequest(
        NetsRequest(checkpoints=[str(run), str(other)], engine="auto"),
        ImagesRequest(data=str(data), workers=0),
    )
    heard = []
    report = run_evaluation(request, single_process(), heard.append)
    lines = [x for x in heard if "engine auto:" in x]
    sources = [n["source"] for n in report["nets"]]
    assert len(lines) == 2 and sources[0] != sources[1]
    for line, source in zip(lines, sources, strict=True):
        assert line.startswith(f"net3 ({source}): engine auto: fast fp32") or line.startswith(
            f"net5 ({source}): engine auto: fast fp32"
        ), line


def test_auto_with_one_candidate_measures_nothing(setup, monkeypatch):
    _, run = setup
    model = load_checkpoint_model(run, "torch")
    monkeypatch.setattr(serving, "installed", lambda: ["torch"])
    monkeypatch.setattr(serving, "native_bf16", lambda device: False)
    heard = []
    served = Serving("auto", "auto").serve(model.twin, torch.randn(2, 3, 40, 40), heard.append)
    assert served.label == "torch fp32" and heard == []


def test_auto_precision_offers_bf16_only_on_native_hardware(monkeypatch):
    monkeypatch.setattr(serving, "installed", lambda: ["torch", "onnxruntime"])
    monkeypatch.setattr(serving, "native_bf16", lambda device: True)
    assert Serving("auto", "auto").candidates() == [
        ("torch", "bf16"),
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
    ]
    assert Serving("torch", "auto").candidates() == [("torch", "bf16")]
    assert Serving("onnxruntime", "auto").candidates() == [("onnxruntime", "fp32")]
    monkeypatch.setattr(serving, "native_bf16", lambda device: False)
    assert Serving("auto", "auto").candidates() == [("torch", "fp32"), ("onnxruntime", "fp32")]
    assert Serving("auto", "fp32", "cuda").candidates() == [("torch", "fp32")]


def common(data, *extra):
    return ["--data", data, "--workers", "0", "--threads", "1", *extra]


def without_extras(monkeypatch):
    """As if neither onnxruntime nor openvino were installed: importing them fails."""
    for name in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, name, None)
    assert engines.installed() == ["torch"]


def test_without_the_extras_nothing_changes(setup, cli, tmp_path, monkeypatch):
    data, run = setup
    without_extras(monkeypatch)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)  # an fp32-only CPU
    outputs = {}
    for label, flags in (("default", []), ("auto", ["--engine", "auto", "--precision", "auto"])):
        npz, report = tmp_path / f"{label}.npz", tmp_path / f"{label}.json"
        code, _, err = cli(
            "run", "eval", "--checkpoint", run, *common(data, "--method", "both"), *flags,
            "--posteriors", npz, "-o", report,
        )  # fmt: skip
        assert code == 0, err
        assert "engine auto" not in err  # one candidate: nothing measured
        assert [n["engine"] for n in json.loads(report.read_text())["nets"]] == ["torch fp32"]
        outputs[label] = np.load(npz)
    for key in ("dense@36,40,44", "multi-crop@36,40,44", "both@36,40,44"):
        assert np.array_equal(outputs["default"][key], outputs["auto"][key]), key
    # And the posteriors are those of the dense twin itself, as evaluation computed them
    # before engines: Net.predict on each image and its mirror image, bit for bit.
    from vggspec.runtime.data.image_folder import scan_image_folder
    from vggspec.runtime.eval.classify.dense import dense_posteriors
    from vggspec.runtime.eval.images import ScaledImages

    model = load_checkpoint_model(run, "torch")
    folder = scan_image_folder(data, "val", classes=model.class_names)
    index = list(outputs["default"]["index"])
    expected = np.zeros((len(folder), len(model.class_names)))
    for q in model.scales:
        images = ScaledImages(folder, q, (32, 32))
        for i in range(len(folder)):
            x = model.preprocessing(images[i][0][None])
            expected[index.index(i)] += dense_posteriors(model.twin, x).numpy()[0]
    assert np.array_equal(outputs["default"]["dense@36,40,44"], (expected / 3).astype(np.float32))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--engine", "openvino"], "pip install 'vggspec[openvino]'"),
        (["--engine", "onnxruntime"], "pip install 'vggspec[onnx]'"),
    ],
)
def test_a_missing_engine_asked_for_by_name_is_one_line(setup, cli, monkeypatch, flags, message):
    data, run = setup
    without_extras(monkeypatch)
    code, _, err = cli("run", "eval", "--checkpoint", run, *common(data), *flags)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--engine", "onnxruntime", "--precision", "bf16"], "onnxruntime computes fp32 only"),
        (["--protocol", "centre", "--engine", "onnxruntime"], "localisation runs on the torch"),
    ],
)
def test_impossible_engine_settings_are_one_line(setup, cli, flags, message):
    data, run = setup
    code, _, err = cli("run", "eval", "--checkpoint", run, *common(data), *flags)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_gpu_asked_for_where_there_is_none_is_one_line(setup, cli, monkeypatch):
    data, run = setup
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    why = (
        f"this torch ({torch.__version__}) is built without CUDA"
        if torch.version.cuda is None
        else "no CUDA GPU is visible to it"
    )
    for engine in ("torch", "auto"):
        flags = ["--device", "cuda", "--engine", engine]
        code, _, err = cli("run", "eval", "--checkpoint", run, *common(data), *flags)
        assert code == 2 and f"--device cuda: {why}; use --device cpu (or auto)" in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_auto_says_what_it_chose_and_the_report_keeps_it(setup, engine_cache):
    data, run = setup
    done = vggspec_cmd(
        "run", "eval", "--checkpoint", run, *common(data), "--engine", "auto", "--json",
        env={"VGGSPEC_ENGINE_CACHE": str(engine_cache)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if "engine auto:" in x]
    # Nothing but vggspec's own lines: no warnings of torch's exporter (it logged one per
    # torchvision op it skips, where torchvision is not installed).
    assert list(engine_cache.glob("*.onnx"))  # it did export
    assert [x for x in done.stderr.splitlines() if not x.startswith("[")] == []
    chosen = json.loads(done.stdout)["nets"][0]["engine"]
    assert line.split("engine auto: ")[1].startswith(chosen + " (")
    assert chosen in {f"{name} fp32" for name in engines.installed()}


def test_features_say_what_computed_them(setup, cli, tmp_path, monkeypatch):
    data, run = setup
    fakes = {"slow": fake_engine("slow", 0.5), "fast": fake_engine("fast", 0.0)}
    monkeypatch.setattr(serving, "installed", lambda: ["slow", "fast"])
    monkeypatch.setattr(serving, "engine", fakes.__getitem__)
    out = tmp_path / "features"
    code, _, err = cli(
        "run", "features", "--checkpoint", run, *common(data), "--out", out, "--engine", "auto"
    )  # fmt: skip
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "engine auto:" in x]
    assert "engine auto: fast fp32" in line
    (net,) = json.loads((out / "features.json").read_text())["nets"]
    assert net["engine"] == "fast fp32"


def test_features_on_onnxruntime_match_torch(setup, cli, tmp_path):
    data, run = setup
    got = {}
    for name in ("torch", "onnxruntime"):
        out = tmp_path / name
        code, _, err = cli(
            "run", "features", "--checkpoint", run, *common(data), "--out", out, "--engine", name
        )  # fmt: skip
        assert code == 0, err
        got[name] = np.load(out / "val.npy")
    np.testing.assert_allclose(got["onnxruntime"], got["torch"], rtol=1e-4, atol=1e-5)


_RANK = """
import datetime, json, sys, time, types
import torch, torch.distributed as dist
rank, port, run, folders = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                        world_size=2, timeout=datetime.timedelta(seconds=60))
try:
    from vggspec.runtime.dist.context import Context
    from vggspec.runtime.eval.classify import job as jobs
    from vggspec.runtime.eval.engines import serving
    from vggspec.runtime.eval.requests import EvalRequest, ImagesRequest, NetsRequest
    # Each rank's clock disagrees with the other's: rank 0's choice must win everywhere.
    delay = {"fast": 0.0, "slow": 0.2} if rank == 0 else {"fast": 0.2, "slow": 0.0}

    def fake(name):
        def compile(net, precision, threads):
            def run(x):
                time.sleep(delay[name])
                return net(x)
            return run
        return types.SimpleNamespace(NAME=name, PACKAGE=name, EXTRA=name,
                                     PRECISIONS=("fp32",), compile=compile)

    serving.installed = lambda: ["slow", "fast"]
    serving.engine = fake
    ctx = Context(rank, 2, 0, torch.device("cpu"))
    chosen = []
    for data in folders:
        request = EvalRequest(NetsRequest(checkpoints=[run], engine="auto"),
                              ImagesRequest(data=data, workers=0))
        models = []
        load = jobs.load_models
        jobs.load_models = lambda *a: models.extend(load(*a)) or models
        report = jobs.run_evaluation(request, ctx)
        jobs.load_models = load
        chosen.append({"report": report["nets"][0]["engine"], "own": models[0].serving.label,
                       "images": report["images"]})
    print(json.dumps(chosen))
finally:
    dist.destroy_process_group()
"""


def test_under_nproc_every_rank_takes_rank_zeros_choice(setup, tmp_path):
    """Two processes on gloo: each rank's own measurement would choose another engine; both
    compute with rank 0's. With one image, rank 0 has none: no rank waits for it."""
    data, run = setup
    one = write_images(tmp_path / "one", {"a": [(40, 40)]})
    outputs = two_ranks(_RANK, run, data, one)
    for ranks in zip(*outputs, strict=True):  # per folder: what each rank computed with
        assert [r["own"] for r in ranks] == ["fast fp32", "fast fp32"], ranks
        assert {r["report"] for r in ranks} == {"fast fp32"}
    assert [r["images"] for r in outputs[0]] == [18, 1]


@pytest.mark.parametrize("damage", ["truncated", "bytes changed"])
def test_a_damaged_export_is_exported_anew_not_run(setup, engine_cache, damage):
    """A cached model cut short (a full disk, a copy stopped) or with changed bytes (which
    ONNX Runtime loads and runs, giving other scores) is noticed and exported again."""
    model = load_checkpoint_model(setup[1], "torch")
    path = exported.exported_onnx(model.twin)
    whole = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    else:
        changed = bytearray(whole)
        for i in range(len(whole) // 3, 2 * len(whole) // 3, 997):
            changed[i] ^= 0x40
        path.write_bytes(changed)
    again = exported.exported_onnx(model.twin)
    assert again.read_bytes() == whole
    assert [p.name for p in engine_cache.iterdir()] == [again.name]


def test_the_export_key_covers_the_exporter(setup, monkeypatch, tmp_path):
    """Another onnx, onnxscript or torch, or another vggspec exporter or lowering: another
    model, not the one exported before."""
    model = load_checkpoint_model(setup[1], "torch")
    before = exported.net_digest(model.twin)
    monkeypatch.setattr(
        exported, "_version", lambda package: "9.9" if package == "onnxscript" else "1"
    )
    exported.exporter_digest.cache_clear()
    assert exported.net_digest(model.twin) != before
    monkeypatch.undo()
    exported.exporter_digest.cache_clear()
    assert exported.net_digest(model.twin) == before
    sources = {p.name for p in exported.SOURCES}
    assert {"onnx_export.py", "compiler"} <= sources
    code = tmp_path / "compiler"
    (code / "lowering").mkdir(parents=True)
    (code / "lowering" / "net.py").write_text("# one version\n")
    monkeypatch.setattr(exported, "SOURCES", (code,))
    first = exported.exporter_digest()
    exported.exporter_digest.cache_clear()
    (code / "lowering" / "net.py").write_text("# a fix\n")
    assert exported.exporter_digest() != first
    exported.exporter_digest.cache_clear()


_KILLED_EXPORT = """
import sys, time
sys.path.insert(0, "tests")
from vggspec.runtime.eval.engines import exported
from vggspec.runtime.eval.models import load_checkpoint_model

def slow_export(net, path):
    with open(path, "wb") as f:
        f.write(b"half a model")
    print("writing", flush=True)
    time.sleep(60)

exported.export_onnx = slow_export
exported.exported_onnx(load_checkpoint_model(sys.argv[1], "torch").twin)
"""


def test_a_killed_export_leaves_nothing_behind(setup, engine_cache):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VGGSPEC_ENGINE_CACHE": str(engine_cache)}
    p = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(setup[1])],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert p.stdout.readline().strip() == "writing"
        assert [f.name for f in engine_cache.iterdir() if f.suffix == ".tmp"]  # mid-export
    finally:
        p.kill()
        p.wait(timeout=30)
    model = load_checkpoint_model(setup[1], "torch")
    path = exported.exported_onnx(model.twin)
    assert [f.name for f in engine_cache.iterdir()] == [path.name]
    assert onnx.load(str(path)).metadata_props  # a whole model


_OPENVINO_TWICE = """
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from test_engines import engine_agrees
engine_agrees(sys.argv[1], "openvino", "fp32", 1e-5)
for path in Path(sys.argv[2]).rglob("*"):  # every file the first run left in the cache
    if path.is_file():
        data = bytearray(path.read_bytes())
        for i in range(len(data) // 2, len(data), 499):
            data[i] ^= 0x40
        path.chmod(0o600)
        path.write_bytes(data)
engine_agrees(sys.argv[1], "openvino", "fp32", 1e-5)
print("agreed")
"""


@pytest.mark.skipif(not HAS_OPENVINO, reason=NO_OPENVINO)
def test_openvino_runs_no_damaged_cache_file(setup, engine_cache):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _OPENVINO_TWICE, str(setup[1]), str(engine_cache)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "agreed", done.stderr[-3000:]
