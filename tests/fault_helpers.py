"""The fault matrix's pieces, shared by tests/test_faults.py (a few chosen kills) and
bench/faults.py (many random ones): a tiny training set-up, the CLI as a black box, and an
audit that every file in a run folder can be read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from helpers import ROOT
from vggspec.runtime.io.rundir import RunDir

SPEC = "input 32x32 RGB\nconv3-8 maxpool\nconv3-16 maxpool\nFC-32 FC-32 FC-10 soft-max\n"
# 60 training images, batch 8: 7 steps an epoch; 3 epochs with patience 0 cross a
# learning-rate drop, a validation and a checkpoint at every epoch end, one every 3 steps.
RECIPE = [
    "batch_size=8",
    "scale=[36,44]",
    "workers=0",
    "log_every=1",
    "init=glorot",
    "lr=0.01",
    "lr_patience=0",
    "checkpoint_every=3",
    "epochs=3",
]
STEPS = 21


def make_setup(root: Path) -> Path:
    """ROOT/data (60 train, 30 val images) and ROOT/tiny.vgg."""
    from vggspec.runtime.data.demo import make_demo_dataset

    if not (root / "data").exists():
        make_demo_dataset(root / "data", seed=3, train_per_class=6, val_per_class=3)
    (root / "tiny.vgg").write_text(SPEC)
    return root


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "train",
        f"spec={root / 'tiny.vgg'}",
        f"data={root / 'data'}",
        f"out={out}",
        *RECIPE,
        *extra,
    ]


def command(*args) -> list[str]:
    return [sys.executable, "-m", "vggspec", *map(str, args)]


def start(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command(*args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL `proc` after `seconds` unless it ended first; True if it was killed."""
    try:
        proc.wait(timeout=seconds)
        proc.communicate()
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return True


def continue_run(root: Path, out: Path, extra: list[str] = ()) -> list[str]:
    """How to carry on after a kill: --resume if a checkpoint was written, else start over
    (a folder with a config but no checkpoint is a run that never started)."""
    if RunDir(out).last.exists():
        return ["run", "train", "--resume", str(out)]
    return train_args(root, out, *extra)


def moment(out: Path) -> str:
    """Where a killed run was, judged from what it left: a temporary file being written,
    the last metrics row."""
    temps = sorted(p.name for p in out.rglob(".*.tmp")) if out.exists() else []
    if any(".last.pt." in t or ".best.pt." in t for t in temps):
        return "checkpoint write"
    if any(".model.safetensors." in t for t in temps):
        return "final save"
    run = RunDir(out)
    if run.model.exists():
        return "after the final save"
    rows = []
    if run.metrics.exists():
        for line in run.metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append({"kind": "torn"})
    if not rows:
        return "start-up"
    last = rows[-1]
    if last.get("kind") == "step" and last.get("step") in (7, 14, 21):
        return "validation"
    return f"steps (after {last.get('kind')} {last.get('step')})"


def audit(out: Path, temporaries: bool = False) -> list[str]:
    """Every file in a run folder that cannot be read as what its name says. With
    `temporaries`, the temporary files of a writer killed mid-write (.NAME.PID.*.tmp, never
    read, removed by the next start) are allowed."""
    from vggspec.runtime.io.checkpoint import load_checkpoint

    import vggspec

    problems = []
    if not out.exists():
        return problems
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = path.name
        try:
            if name.endswith(".tmp"):
                if not temporaries:
                    problems.append(f"{path.relative_to(out)}: a temporary file left behind")
            elif name.endswith(".pt"):
                load_checkpoint(path)
            elif name.endswith(".safetensors"):
                vggspec.load(path, backend="torch")
            elif name.endswith(".yaml"):
                yaml.safe_load(path.read_text())
            elif name.endswith(".json"):
                json.loads(path.read_text())
            elif name.endswith(".jsonl"):
                for line in path.read_text().splitlines():
                    json.loads(line)
            else:
                path.read_text()
        except Exception as err:  # any failure is the finding
            problems.append(f"{path.relative_to(out)}: {type(err).__name__}: {err}"[:300])
    return problems


def digest(out: Path) -> str:
    import hashlib

    import vggspec

    state = vggspec.load(RunDir(out).model, backend="torch").state_dict()
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()


def run_to_end(
    root: Path, out: Path, timeout: float = 600, extra: list[str] = ()
) -> subprocess.CompletedProcess:
    """Start the run in `out`, or resume it if it has a checkpoint, and wait for its end."""
    started = time.monotonic()
    result = subprocess.run(
        command(*continue_run(root, out, extra)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result.seconds = time.monotonic() - started
    return result


def children(pid: int) -> list[int]:
    """The pids of `pid`'s child processes (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead child nobody has reaped holds no files)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
