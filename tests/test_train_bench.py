"""bench/train.py's measurement protocol: each side runs in a fresh process and prints its
images/s (kept working here on a tiny demo set; the real figures come from the bench)."""

import subprocess
import sys
from pathlib import Path

import pytest
from vggspec.runtime.data.demo import make_demo_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("side", ["vggspec", "hand", "hand+retain"])
def test_each_side_reports_images_per_second(tmp_path, side):
    make_demo_dataset(tmp_path / "data", seed=0, train_per_class=2, val_per_class=1)
    command = [
        sys.executable, str(ROOT / "bench" / "train.py"), "--side", side, "--net", "demo",
        "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--batch", "4",
        "--steps", "3", "--workers", "0",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) > 0
    # Only the trainer writes a run; the hand-written loops leave nothing behind.
    assert (tmp_path / "run" / "summary.json").exists() == (side == "vggspec")
