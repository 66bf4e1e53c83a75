"""bench/gpu_check.py cannot rot while no GPU is around: its --dry-run runs every section's
code on the CPU (Triton interpreter, toy sizes), and the tree runs without being installed."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from bench.gpu_check import main

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_writes_every_section(tmp_path, capsys, one_thread):
    assert main([str(tmp_path), "--dry-run"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and set(result["seconds"]) == {"kernels", "layers", "step", "dense"}
    families = {r["family"] for r in result["kernels"]}
    assert {"conv fwd", "conv dgrad", "conv wgrad", "max pool fwd+bwd"} <= families
    assert all(r["ok"] for r in result["kernels"])
    passes = {(r["layer"], r["kernel"]) for r in result["layers"]}
    # The first layer has no data gradient (its input is the image).
    assert passes == {("conv1_1", "fwd"), ("conv1_1", "wgrad")} | {
        ("conv1_2", k) for k in ("fwd", "dgrad", "wgrad")
    }
    assert all(r["predicted_tflops"] > 0 for r in result["layers"])
    assert [r["backend"] for r in result["step"]] == ["torch", "triton", "auto"]
    assert all(r["fraction_of_roofline"] > 0 and r["images_per_s"] > 0 for r in result["step"])
    assert [r["backend"] for r in result["dense"]] == ["torch", "triton"]
    assert result["autotune"]  # the auto step measured its calls
    printed = capsys.readouterr().out
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in printed and "| conv1_2 | 1 | bf16 | dgrad |" in table
    assert "| every Triton kernel correct | 0 failing | yes |" in table
    assert table.count("| auto step ≥") == 2  # against torch and against the roofline


_PLAIN_PYTHON = """
import sys
sys.path.append(sys.argv[2])  # site-packages, for torch and lark, without its .pth hooks
sys.path.insert(0, sys.argv[1] + "/bench")
import _tree
_tree.use_this_tree(__import__("pathlib").Path(sys.argv[1]))
import vggspec.compiler.lowering.autotune as m
print(m.__file__)
"""


def test_the_tree_runs_without_an_install():
    """python -S: no site-packages hooks, so no editable install; the tree must map itself."""
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", _PLAIN_PYTHON, str(ROOT), site],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == ROOT / "compiler" / "lowering" / "autotune.py"
