"""Paths shared by the tests (a module of its own: two conftest.py files cannot both be
imported as `conftest`)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TABLE1 = ("A", "A-LRN", "B", "C", "D", "E")


def vggspec_cmd(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    """`python -m vggspec ARGS` in a fresh process (for exit codes, signals, torchrun)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vggspec", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def two_ranks(script: str, *args, timeout: float = 150) -> list:
    """`python -c script RANK PORT ARGS` as ranks 0 and 1 of a gloo group on 127.0.0.1 (the
    script joins it with its own timeout and destroys it in a `finally`): the JSON each
    printed last, in rank order; killed if one outlives `timeout`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(rank), port, *map(str, args)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs


def assert_same_outputs_and_gradients(out, want, params, tolerance: float = 1e-4) -> None:
    """`out` (a net's output) equals `want` (a hand-written reference of it), and so do the
    gradients of the sum of squares of each with respect to `params`."""
    import torch

    torch.testing.assert_close(out, want, atol=tolerance, rtol=tolerance)
    grads = torch.autograd.grad(out.square().sum(), params)
    wanted = torch.autograd.grad(want.square().sum(), params)
    for got, expected in zip(grads, wanted, strict=True):
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
