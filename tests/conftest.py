"""Test set-up: threads that do not spin, Triton's interpreter without a GPU, the in-process CLI."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile

# Idle OpenMP threads sleep instead of spinning, here and in every process the tests start
# (they inherit the environment): on a shared 2-core machine the spinning doubled the CPU
# time of a 28-step training run (3.8 CPU s with PASSIVE, 6-9 s without). Results do not
# depend on it. Read by the OpenMP runtime when torch loads it, so before `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Triton's interpreter runs each tile's dot as a numpy matmul of at most 128x128: OpenBLAS's
# threads gain nothing there and spin between calls (the kernel tests: ~27 % less CPU time
# with one). Torch does not use OpenBLAS. Read when numpy loads it, so before any import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Compiled kernel figures (compiler/kernels/aot_cache.py) go to one fresh folder per test
# session, shared by its subprocesses, so that every session compiles for real; set
# VGGSPEC_AOT_CACHE to a lasting folder to reuse compiles between runs.
if "VGGSPEC_AOT_CACHE" not in os.environ:
    os.environ["VGGSPEC_AOT_CACHE"] = tempfile.mkdtemp(prefix="vggspec-aot-")
    atexit.register(shutil.rmtree, os.environ["VGGSPEC_AOT_CACHE"], ignore_errors=True)

import torch

# Without a GPU, Triton kernels run in its interpreter, which must be chosen before
# triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from hypothesis import settings

from vggspec.cli import main

# CI (.ci/run) replays the same examples every run, so that a red run is about the
# change; `make test` on a developer's machine draws new ones and keeps exploring.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def cli(capsys):
    """Run `vggspec ARGS` in this process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def one_thread_by_default():
    """Every test starts with one torch thread (see `one_thread`): on a shared 2-core
    machine the second thread mostly spins in OpenMP's barriers (test_weights.py and
    test_lowering.py: 63 CPU s with two, 44 with one). Commands that set their own count
    (training, --threads) still do; subprocesses are not affected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def malloc_defaults_after_each_test():
    """A training run in this process (distributed.setup) keeps freed memory for good, as a
    `run train` process should; the suite then runs other tests in the same process, so
    each test ends with glibc's defaults back (after in-process training, the Triton
    interpreter's config-A test grew to 23 GB and was OOM-killed; alone it peaks at 1.1 GB)."""
    yield
    from vggspec.runtime.dist.cpu_memory import stop_retaining

    stop_retaining()


@pytest.fixture
def one_thread():
    """Tiny nets gain nothing from threads, and on a loaded 2-core machine OpenMP's
    barriers can make a 1 ms forward take 100 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def alarm():
    """Fail, rather than hang, if a test waits for good (a walk that follows a loop, a thread
    that is never joined): 20 s."""
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("did not finish in 20 s"))
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
