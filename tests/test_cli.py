"""`vggspec compile`: outputs, options, and one clear line for every bad file."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from helpers import ROOT, SPECS

from vggspec.cli import main


def test_table_has_every_layer_and_the_totals(cli):
    code, out, _ = cli("compile", SPECS / "E.vgg")
    assert code == 0
    for expected in (
        "conv5_4",
        "fc8",
        "143,667,240",
        "19,632,062,464",
        "FLOPs (2 x MACs)",
        "460 px",
    ):
        assert expected in out


def test_dense_option_shows_the_score_map(cli):
    code, out, _ = cli("compile", SPECS / "D.vgg", "--dense", "--input", "384x384")
    assert code == 0
    assert "class score map   6x6 at input 384x384" in out
    assert "conv7x7-4096+relu" in out
    code, out, _ = cli("compile", SPECS / "D.vgg", "--dense", "--json")
    assert json.loads(out)["score_map"] == [1, 1]


@pytest.mark.parametrize(
    "emit, marker",
    [
        ("spec", "input 224x224 RGB\n"),
        ("ast", "Conv(kernel=3, channels=64)"),
        ("ir", "%conv1_1 = conv3x3-64 pad 1+relu(%data)"),
        ("dot", "digraph"),
        ("table", "receptive field"),
        ("json", '"macs": 7609090048'),
    ],
)
def test_every_stage_can_be_emitted(cli, emit, marker):
    code, out, _ = cli("compile", SPECS / "A.vgg", "--emit", emit)
    assert code == 0
    assert marker in out


def test_no_fuse_and_memory_options(cli):
    code, out, _ = cli(
        "compile", SPECS / "A.vgg", "--json", "--no-fuse", "--batch", "4", "--dtype", "bfloat16"
    )
    assert code == 0
    report = json.loads(out)
    assert (report["launches"], report["batch"], report["dtype"]) == (29, 4, "bfloat16")
    assert report["param_bytes"] == 2 * 132_863_336


def test_output_file(cli, tmp_path):
    target = tmp_path / "a.json"
    code, out, _ = cli("compile", SPECS / "A.vgg", "--json", "-o", target)
    assert code == 0 and out == ""
    assert json.loads(target.read_text())["params"] == 132_863_336


def _bad_files(tmp_path):
    (tmp_path / "empty.vgg").write_text("")
    (tmp_path / "binary.vgg").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.vgg").write_bytes("conv3-64 # caf\xe9".encode("latin-1"))
    (tmp_path / "garbage.vgg").write_bytes(b"qwertyuiop" * 1_000_000)  # 10 MB
    (tmp_path / "ok-but-long.vgg").write_text("x" * 900_000)
    (tmp_path / "adir").mkdir()
    return {
        "missing.vgg": "no such file",
        "adir": "is a directory",
        "empty.vgg": "the spec is empty",
        "binary.vgg": "binary file",
        "latin1.vgg": "not UTF-8",
        "garbage.vgg": "too large to be a spec",
        "ok-but-long.vgg": "unknown word",
    }


def test_bad_files_give_one_clear_error_and_exit_2(cli, tmp_path):
    for name, message in _bad_files(tmp_path).items():
        code, out, err = cli("compile", tmp_path / name)
        assert code == 2, name
        assert out == ""
        assert message in err, (name, err)
        assert err.startswith(str(tmp_path / name)), err
        assert len(err.splitlines()) <= 4, err


def test_no_traceback_from_the_real_command(tmp_path):
    bad = tmp_path / "bad.vgg"
    bad.write_text("input 224x224 RGB\nconv3-64 conv3-64 maxpool\nconv3-128 FC-10 conv3-128\n")
    result = subprocess.run(
        [sys.executable, "-m", "vggspec", "compile", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:3:17: error: conv2_2 (conv3-128): a convolution cannot follow" in result.stderr
    assert "^^^^^^^^^" in result.stderr


@pytest.mark.parametrize("args", [["--input", "12xq"], ["--batch", "0"], ["--emit", "nope"]])
def test_bad_options_exit_2(cli, args):
    with pytest.raises(SystemExit) as info:
        cli("compile", SPECS / "A.vgg", *args)
    assert info.value.code == 2


def test_output_and_target_mistakes_are_one_message(cli, tmp_path):
    spec = tmp_path / "c.vgg"
    spec.write_text("input 224x224 RGB\nconv3-8 maxpool\nFC-10 soft-max\n")
    code, _, err = cli("compile", spec, "-o", tmp_path)
    assert code == 2 and err == f"vggspec: error: -o {tmp_path}: is a folder; give a file name\n"
    code, _, err = cli("compile", spec, "--input", "100000x100000", "--target", "sm_80")
    assert code == 2 and "past int32 indexing" in err and len(err.splitlines()) == 1
    assert cli("compile", spec, "-o", tmp_path / "new" / "c.txt")[0] == 0  # folders created
    assert "conv1_1" in (tmp_path / "new" / "c.txt").read_text()
    # Flags that were dropped without a word: float16 reported as "bf16" (its kernels), --emit
    # beside --json printed JSON, --emit ir under --target printed the kernel table.
    for flags, says in (
        (["--target", "sm_90", "--dtype", "float16"], "or bfloat16, not float16"),
        (["--json", "--emit", "dot"], "--json is --emit json: give one of them"),
        (["--target", "sm_90", "--emit", "ir"], "as a table or JSON, not --emit ir"),
    ):
        code, out, err = cli("compile", spec, *flags)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and says in err, err
    assert cli("compile", spec, "--json", "--emit", "json")[0] == 0


def test_spec_and_recipe_reads_stop_at_the_limit_whatever_the_file_is(cli, tmp_path):
    # /dev/zero says it is empty and never ends: reading it whole took 17.9 GB in 10 s.
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = cli("compile", "/dev/zero")
    assert code == 2 and err.strip() == "/dev/zero: error: more than 1 MiB, too large to be a spec"
    code, _, err = cli("run", "train", "--config", "/dev/zero", f"out={tmp_path / 'run'}")
    assert code == 2 and err.strip() == "/dev/zero: more than 1 MiB, too large to be a run config"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, grown_kib
    assert not (tmp_path / "run").exists()


def test_a_silent_pipe_is_one_line_after_a_bounded_wait(cli, tmp_path, monkeypatch):
    from vggspec.compiler.frontend import source

    monkeypatch.setattr(source, "READ_TIMEOUT_S", 0.3)
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # a writer that never writes (nor closes)
    try:
        started = time.monotonic()
        code, _, err = cli("compile", fifo)
        assert code == 2 and "nothing to read for 0.3 s" in err and len(err.splitlines()) == 1
        code, _, err = cli("run", "train", "--config", fifo)
        assert code == 2 and "nothing to read for 0.3 s" in err and len(err.splitlines()) == 1
        assert time.monotonic() - started < 10
    finally:
        os.close(writer)
    # A pipe that gives a spec and ends is read as a file is (`compile <(cat spec)`).
    text = (SPECS / "A.vgg").read_text()

    def write_and_close():
        with open(fifo, "w") as f:  # waits for the reader
            f.write(text)

    writer_thread = threading.Thread(target=write_and_close)
    writer_thread.start()
    code, out, err = cli("compile", fifo, "--json")
    writer_thread.join(timeout=10)
    assert code == 0, err
    assert json.loads(out)["params"] == 132_863_336


def _wait_policy_after_main(env_extra: dict[str, str], before: str = "") -> list[str]:
    """OMP_WAIT_POLICY after `vggspec compile` ran in a fresh process (`before`: code run
    first), and whether it held when torch was first imported."""
    script = (
        f"{before}\nimport os, sys\nfrom vggspec import cli\n"
        "cli.main(['compile', sys.argv[1], '-o', os.devnull])\n"
        "import torch\n"
        "print(os.environ.get('OMP_WAIT_POLICY', '-'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(SPECS / "demo.vgg")],
        env={**env, **env_extra},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_commands_let_idle_openmp_threads_sleep():
    """The CLI sets OMP_WAIT_POLICY=PASSIVE before torch loads (its OpenMP runtime reads it
    then), unless the user chose a policy or a spin count; once torch is loaded it is left."""
    assert _wait_policy_after_main({}) == ["PASSIVE"]
    assert _wait_policy_after_main({"OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE"]
    assert _wait_policy_after_main({"GOMP_SPINCOUNT": "1000"}) == ["-"]
    assert _wait_policy_after_main({}, before="import torch") == ["-"]


def test_no_output_lands_on_a_training_runs_files_or_on_an_input(cli, tmp_path):
    """`run eval -o RUN/model.safetensors` replaced the net it had just evaluated with its
    JSON report; `convert -o RUN/model.safetensors` a trained net with a converted one."""
    from vggspec.errors import UserError, check_output

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "model.safetensors", "checkpoints/last.pt"):
        (run / name).write_text(name)
    code, _, err = cli("convert", tmp_path / "vgg16.caffemodel", "-o", run / "model.safetensors")
    assert code == 2 and "is a file of the training run" in err
    assert len(err.strip().splitlines()) == 1
    for name in ("model.safetensors", "checkpoints/last.pt", "summary.json"):
        with pytest.raises(UserError, match="training run"):
            check_output(run / name, "-o")
    assert (run / "model.safetensors").read_text() == "model.safetensors"
    check_output(run / "report.json", "-o")  # a report of its own beside the run is fine
    weights = tmp_path / "w.pth"
    weights.write_text("w")
    with pytest.raises(UserError, match="is the input"):
        check_output(tmp_path / "." / "w.pth", "-o", inputs=[weights])
    check_output(tmp_path / "report.json", "-o", inputs=[weights])
    spec = tmp_path / "c.vgg"
    spec.write_text("input 32x32 RGB\nconv3-8 maxpool\nFC-10 soft-max\n")
    code, _, err = cli("compile", spec, "-o", spec)  # wrote the table over the spec
    assert code == 2 and "is the input" in err and "conv3-8" in spec.read_text()


@pytest.mark.parametrize("command", ["eval", "features"])
def test_a_missing_net_is_named_before_the_data_it_would_give(cli, tmp_path, command):
    """`run eval --checkpoint runs/typo` said "say which images: --data DIR": the run's own
    data is looked up from the run, and a run that is not there was not named."""
    out = ["--out", tmp_path / "feats"] if command == "features" else []
    code, _, err = cli("run", command, "--checkpoint", tmp_path / "typo", *out)
    assert code == 2 and "typo: no such checkpoint file or run folder" in err
    assert len(err.strip().splitlines()) == 1


def test_an_abbreviated_option_is_refused_not_taken_for_the_whole_one(tmp_path, capsys):
    """argparse took --check for --checkpoint and --train-per for --train-per-class."""
    for args in (
        ["run", "eval", "--check", tmp_path],
        ["data", "demo", tmp_path / "d", "--train-per", "1"],
    ):
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in args])
        assert exited.value.code == 2
        assert "unrecognized arguments: --" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
