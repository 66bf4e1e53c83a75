"""The fault matrix, long form: kill -9 a small training run at random moments, resume it, and
check that it ends bit-identical to an uninterrupted run with every file readable throughout.

Run: python bench/faults.py [--kills 24] [--evals 6] [--seed 0] [--chosen] [--work DIR]

Drives the CLI as a black box (subprocesses, the tests' tiny set-up: tests/fault_helpers.py).
  1. A reference run, uninterrupted; its weights' digest and its wall time T.
  2. With --chosen, kills at chosen moments (VGGSPEC_FAULT: mid-step, in a checkpoint write,
     in validation, before the final save; the suite has each). Then random ones: each
     trial starts a run and SIGKILLs it after a uniform random delay in (0, T), resumes,
     and with probability 3/4 kills the resumed run too, until --kills kills happened.
     After every kill, every file of the run folder is read back (checkpoints, weights,
     config, metrics, summary, log); after the last resume the weights must equal the
     reference's bit for bit.
  3. `run eval -o FILE` killed at random moments: FILE is absent or complete, nothing left
     beside it but the dead writer's lock, which the next `run eval -o FILE` takes over.
  4. A full disk during a checkpoint write: the ENOSPC fault hook, and (when this process
     may mount) a real tmpfs too small for a second checkpoint: the previous checkpoint
     stays readable, the error is one line, and --resume (with room again) ends identical.
  5. Never silently wrong, never stuck (issue 21's reproductions): an edited config.yaml
     refused on --resume; out= through a dangling link and -o into /proc refused within
     seconds; /dev/zero as a spec or a recipe read no further than 1 MiB; `data demo`
     killed -9 leaves no worker behind; device=cuda without CUDA, backend=triton without a
     GPU and the data and weights refusals exit 2 with no run folder; a run past its memory
     cap stops with a checkpoint and resumes identical; two identical runs write identical
     model.safetensors files.
Prints one line per kill and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fault_helpers import (  # noqa: E402
    STEPS,
    audit,
    children,
    command,
    continue_run,
    digest,
    kill_after,
    make_setup,
    moment,
    run_to_end,
    running,
    start,
    train_args,
)
from vggspec.runtime.io.rundir import RunDir  # noqa: E402

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)
        print(f"  FAIL: {what}", flush=True)


def finish(root: Path, out: Path, reference: str, label: str) -> None:
    result = run_to_end(root, out)
    check(
        result.returncode == 0,
        f"{label}: resume exited {result.returncode}: "
        f"{result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else ''}",
    )
    if result.returncode == 0:
        check(digest(out) == reference, f"{label}: weights differ from the uninterrupted run")
        check(
            json.loads((out / "summary.json").read_text())["steps"] == STEPS,
            f"{label}: summary steps",
        )
    problems = audit(out)
    check(not problems, f"{label}: after the resume: {problems}")


def after_kill(out: Path, label: str, moments: list[str]) -> None:
    where = moment(out)
    moments.append(where)
    problems = audit(out, temporaries=True)
    left = len(list(out.rglob(".*.tmp"))) if out.exists() else 0
    print(
        f"  {label}: killed during {where}; {len(problems)} unreadable, "
        f"{left} temporary left (removed by the resume)",
        flush=True,
    )
    check(not problems, f"{label} ({where}): {problems}")


def chosen_kills(root: Path, work: Path, reference: str, moments: list[str]) -> int:
    faults = [
        "kill:11",
        "kill-in-checkpoint:6",
        "kill-in-validation:7",
        f"kill-in-final-save:{STEPS}",
        "kill-in-checkpoint:14",
    ]
    for fault in faults:
        out = work / f"chosen-{fault.replace(':', '-')}"
        proc = start(*train_args(root, out), env={"VGGSPEC_FAULT": fault})
        proc.communicate(timeout=600)
        check(proc.returncode == -9, f"{fault}: exit {proc.returncode}, expected SIGKILL")
        after_kill(out, fault, moments)
        finish(root, out, reference, fault)
    return len(faults)


def random_kills(root, work, reference, seconds, kills, rng, moments) -> int:
    done, trial = 0, 0
    while done < kills:
        trial += 1
        out = work / f"random-{trial}"
        args = train_args(root, out)
        while True:
            delay = rng.uniform(0.0, seconds)
            if not kill_after(start(*args), delay):
                break  # finished before the kill
            done += 1
            after_kill(out, f"trial {trial} kill at {delay:.1f} s", moments)
            if rng.random() < 0.25 or done >= kills:
                break
            args = continue_run(root, out)
        finish(root, out, reference, f"trial {trial}")
    return done


def eval_kills(root: Path, work: Path, model: Path, n: int, rng: random.Random) -> None:
    args = [
        "run",
        "eval",
        "--checkpoint",
        model,
        "--data",
        root / "data",
        "--workers",
        "0",
        "--json",
    ]
    report = work / "eval" / "full.json"
    started = time.monotonic()
    full = subprocess.run(command(*args, "-o", report), cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    check(full.returncode == 0, f"eval: {full.stderr[-500:]}")
    complete = json.loads(report.read_text())
    dead_locks = []
    for k in range(n):
        target = work / "eval" / f"killed-{k}.json"
        delay = rng.uniform(0.0, seconds)
        killed = kill_after(start(*args, "-o", target), delay)
        # The killed writer's lock (.NAME.lock: its pid and start time) is not output: the
        # next writer of NAME takes it over, checked below.
        lock = target.parent / f".{target.name}.lock"
        leftovers = [p.name for p in target.parent.glob(f".{target.name}.*") if p != lock]
        if lock.exists():
            dead_locks.append(target)
        state = "absent" if not target.exists() else "complete"
        if target.exists():
            try:
                got = json.loads(target.read_text())
                same = {k: v for k, v in got.items() if "second" not in k}
                check(
                    same == {k: v for k, v in complete.items() if "second" not in k},
                    f"eval -o killed at {delay:.1f} s: differs from the full report",
                )
            except json.JSONDecodeError:
                state = "PARTIAL"
                check(False, f"eval -o killed at {delay:.1f} s: partial output")
        print(
            f"  eval -o {'killed' if killed else 'finished'} at {delay:.1f} s: output "
            f"{state}; temporary files left: {leftovers}",
            flush=True,
        )
        check(not leftovers, f"eval -o killed at {delay:.1f} s: left {leftovers}")
    if dead_locks:
        target = dead_locks[0]
        again = subprocess.run(
            command(*args, "-o", target), cwd=ROOT, capture_output=True, text=True
        )
        taken = "taking over the lock of a dead writer" in again.stderr
        left = [p.name for p in target.parent.glob(f".{target.name}.*")]
        print(
            f"  eval -o {target.name} again: exit {again.returncode}, the dead writer's lock "
            f"{'taken over' if taken else 'NOT taken over'}, left {left}",
            flush=True,
        )
        check(again.returncode == 0 and taken and not left, f"eval -o again: {again.stderr[-500:]}")
        got = {k: v for k, v in json.loads(target.read_text()).items() if "second" not in k}
        check(got == {k: v for k, v in complete.items() if "second" not in k}, "eval -o again")


def one_error_line(stderr: str) -> bool:
    # The run's log lines go to stderr too ("validation ...: top-1 error 12%"): not errors.
    errors = [line for line in stderr.splitlines() if "error:" in line.lower()]
    return len(errors) == 1 and "Traceback" not in stderr


def disk_full(root: Path, work: Path, reference: str) -> None:
    out = work / "enospc-hook"
    proc = start(*train_args(root, out), env={"VGGSPEC_FAULT": "enospc-in-checkpoint:6"})
    _, stderr = proc.communicate(timeout=600)
    print(
        f"  ENOSPC hook at step 6: exit {proc.returncode}; "
        f"{stderr.strip().splitlines()[-1] if stderr.strip() else ''}",
        flush=True,
    )
    check(proc.returncode == 1 and one_error_line(stderr), f"ENOSPC hook: {stderr[-800:]}")
    check(not audit(out), f"ENOSPC hook: {audit(out)}")
    finish(root, out, reference, "ENOSPC hook")
    mount = work / "tmpfs"
    mount.mkdir()
    # The tiny net's checkpoint is ~0.3 MB: room for one and the logs, not for a second
    # beside it while the first is still there (an atomic write needs both).
    sizing = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if sizing.returncode != 0:
        print(f"  (no real full disk: cannot mount a tmpfs here: {sizing.stderr.strip()})")
        return
    try:
        out = mount / "run"
        result = subprocess.run(
            command(*train_args(root, out)), cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        print(f"  real full disk (600 KB tmpfs): exit {result.returncode}; {last}", flush=True)
        check(
            result.returncode == 1 and one_error_line(result.stderr),
            f"tmpfs: {result.stderr[-800:]}",
        )
        check(not audit(out), f"tmpfs: {audit(out)}")
        moved = work / "tmpfs-run"
        shutil.copytree(out, moved)
        # The run folder moved to a roomy disk: its config names out=, resume by folder.
        finish(root, moved, reference, "tmpfs run, resumed elsewhere")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _timed(*args, env: dict | None = None, timeout: float = 120) -> tuple:
    """(exit code, stderr, seconds, peak resident KiB) of `vggspec ARGS`, or exit None if it
    had not ended after `timeout` (then it is killed)."""
    import threading

    started = time.monotonic()
    proc = subprocess.Popen(
        command(*args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.append(proc.stderr.read()))
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        reader.join()
        os.waitpid(proc.pid, 0)
        return None, said[0] + " (hung: killed)", time.monotonic() - started, 0
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest child's
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, said[0], time.monotonic() - started, usage.ru_maxrss


def refused(label: str, args: list, leaves: Path | None, says: str, env=None) -> None:
    """`vggspec ARGS` exits 2 within the timeout, its last line saying `says`, and `leaves`
    (the run folder it was given) does not exist afterwards."""
    code, stderr, seconds, _ = _timed(*args, env=env)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    print(f"  {label}: exit {code} in {seconds:.1f} s; {last[:150]}", flush=True)
    check(code == 2 and says in last and "Traceback" not in stderr, f"{label}: {stderr[-600:]}")
    if leaves is not None:
        check(not leaves.exists(), f"{label}: left {leaves}")


def never_stuck(root: Path, work: Path, reference: Path) -> None:
    import hashlib

    # 1. An edited config.yaml: refused, the run folder as it was.
    copy = work / "edited"
    shutil.copytree(reference, copy)
    config = copy / "config.yaml"
    config.write_text(
        "".join(
            line
            for line in config.read_text().splitlines(True)
            if not line.startswith(("scale:", "- 36", "- 44", "normalise:"))
        )
    )
    model = (copy / "model.safetensors").read_bytes()
    refused("resume of an edited config.yaml", ["run", "train", "--resume", copy], None, "scale")
    check((copy / "model.safetensors").read_bytes() == model, "edited config: model rewritten")
    # 3. Waits with a bound: a dangling link on the way to out=, -o into /proc.
    (work / "dangling").symlink_to(work / "gone")
    out = work / "dangling" / "x"
    refused("out= through a dangling link", train_args(root, out), None, "link")
    refused(
        "run eval -o /proc/r.json",
        ["run", "eval", "--checkpoint", reference, "-o", "/proc/r.json"],
        None,
        "/proc",
    )
    # 5. Reads with a limit.
    for label, args in (
        ("compile /dev/zero", ["compile", "/dev/zero"]),
        ("--config /dev/zero", ["run", "train", "--config", "/dev/zero"]),
    ):
        code, stderr, seconds, peak = _timed(*args)
        print(f"  {label}: exit {code} in {seconds:.1f} s, peak {peak / 1024:.0f} MiB", flush=True)
        check(code == 2 and "1 MiB" in stderr and peak < 1 << 20, f"{label}: {stderr[-300:]}")
    # 4. No orphans: `data demo` killed -9 while its pool writes.
    proc = start("data", "demo", work / "demo-killed")
    time.sleep(3)
    workers = children(proc.pid)
    proc.kill()
    try:
        proc.communicate(timeout=20)  # the pipe ends only once no worker holds it
        ended = True
    except subprocess.TimeoutExpired:
        ended = False
    time.sleep(1)
    alive = [w for w in workers if running(w)]
    print(f"  data demo killed -9: {len(workers)} workers, {len(alive)} alive after 1 s")
    check(ended and not alive, f"data demo: pipe ended {ended}, alive {alive}")
    # 6, 7. Device, backend, data and weights mistakes: exit 2, no run folder.
    new = work / "refused"
    extra_env = {"TRITON_INTERPRET": ""}
    for label, extra, says in (
        ("backend=triton without a GPU", ["backend=triton"], "TRITON_INTERPRET=1"),
        ("init= a missing run", [f"init={work / 'nothing'}"], "no such checkpoint"),
        ("finetune= a missing run", [f"finetune={work / 'nothing'}"], "no such checkpoint"),
        ("batch above the data", ["batch_size=100"], "fewer than one batch"),
    ):
        args = train_args(root, new, *extra)
        if label.startswith("finetune="):  # with the recipe's init=glorot it is refused first
            args = [a for a in args if a != "init=glorot"]
        refused(label, args, new, says, env=extra_env)
    import torch

    if not torch.cuda.is_available():
        refused("device=cuda without CUDA", train_args(root, new, "device=cuda"), new, "cuda")
    # 2. A cap under the measured step: refused. Past its cap (the probe off, as for a run
    # that grows past its measure): stopped with a checkpoint, resumed identical.
    capped = work / "capped"
    says = "would stop at its first step"
    refused(
        "memory cap under the step",
        train_args(root, capped),
        capped,
        says,
        env={"VGGSPEC_MEMORY_CAP": "1M"},
    )
    unprobed = {"VGGSPEC_MEMORY_CAP": "1M", "VGGSPEC_MEMORY_PROBE": "0"}
    code, stderr, _, _ = _timed(*train_args(root, capped), env=unprobed)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    print(f"  memory cap 1M: exit {code}; {last[:150]}", flush=True)
    check(code == 1 and "past its cap" in last, f"memory cap: {stderr[-600:]}")
    check(not audit(capped), f"memory cap: {audit(capped)}")
    finish(root, capped, digest(reference), "memory cap")
    # 8. Identical runs, identical files.
    again = work / "again"
    run_to_end(root, again)
    same = [
        hashlib.sha256((r / "model.safetensors").read_bytes()).hexdigest()
        for r in (reference, again)
    ]
    print(f"  model.safetensors of two identical runs: {same[0][:16]} {same[1][:16]}")
    check(same[0] == same[1], "two identical runs wrote different model.safetensors")
    second_review(root, work, reference)


def second_review(root: Path, work: Path, reference: Path) -> None:
    """What the second review of issue 21 found: a FIFO among the images (the scan hung), a
    class renamed before a resume (labels moved), a checkpoint with a changed byte (resumed
    from), SIGTERM during the set-up (a folder with a stale lock left)."""
    import signal

    data = work / "fifo-data"
    shutil.copytree(root / "data", data)
    os.mkfifo(data / "train" / "circle" / "fifo.jpg")
    code, stderr, seconds, _ = _timed(
        *train_args(root, work / "fifo", f"data={data}", "max_bad_files=0.5")
    )
    print(f"  a FIFO among the images: exit {code} in {seconds:.1f} s", flush=True)
    check(code == 0 and "1 not_a_file" in stderr, f"FIFO among the images: {stderr[-600:]}")
    renamed, run = work / "renamed-data", work / "renamed"
    shutil.copytree(root / "data", renamed)
    check(_timed(*train_args(root, run, f"data={renamed}"))[0] == 0, "renamed: the first run")
    first = sorted(p.name for p in (renamed / "train").iterdir())[0]
    for split in ("train", "val"):
        (renamed / split / first).rename(renamed / split / f"zz-{first}")
    model = (run / "model.safetensors").read_bytes()
    refused(
        "resume after a class folder was renamed",
        ["run", "train", "--resume", run],
        None,
        "classes changed",
    )
    check((run / "model.safetensors").read_bytes() == model, "renamed classes: model rewritten")
    damaged = work / "damaged"
    shutil.copytree(reference, damaged)
    last = damaged / "checkpoints" / "last.pt"
    body = bytearray(last.read_bytes())
    body[len(body) // 2] ^= 0x01
    last.write_bytes(bytes(body))
    refused(
        "resume from a checkpoint with one bit changed",
        ["run", "train", "--resume", damaged],
        None,
        "CRC-32",
    )
    for after in (2.0, 4.0, 6.0):  # imports, the data scan, the memory probe
        out = work / f"sigterm-{after:g}"
        proc = start(*train_args(root, out))
        time.sleep(after)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        left = sorted(p.name for p in out.iterdir()) if out.exists() else []
        stale = left and not (out / "checkpoints").exists()
        print(f"  SIGTERM after {after:g} s: exit {proc.returncode}, left {left}", flush=True)
        check(proc.returncode in (0, 143) and not stale, f"SIGTERM after {after:g} s: {left}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=24, help="random kills (≥ 20)")
    parser.add_argument("--evals", type=int, default=6, help="random kills of run eval -o")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chosen", action="store_true", help="also the chosen kills (tests/test_faults.py)"
    )
    parser.add_argument("--work", type=Path, help="keep the run folders here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="vggspec-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    root = make_setup(work)
    reference = work / "reference"
    started = time.monotonic()
    result = subprocess.run(
        command(*train_args(root, reference)), cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"the reference run failed: {result.stderr[-2000:]}")
    expected = digest(reference)
    print(f"reference: {STEPS} steps in {seconds:.1f} s, weights {expected[:16]}", flush=True)
    moments: list[str] = []
    chosen = 0
    if args.chosen:
        print("chosen kills:", flush=True)
        chosen = chosen_kills(root, work, expected, moments)
    print("random kills:", flush=True)
    randoms = random_kills(root, work, expected, seconds, args.kills, rng, moments)
    print("run eval -o:", flush=True)
    eval_kills(root, work, RunDir(reference).model, args.evals, rng)
    print("full disk:", flush=True)
    disk_full(root, work, expected)
    print("never silently wrong, never stuck:", flush=True)
    never_stuck(root, work, reference)
    counts: dict[str, int] = {}
    for m in moments:
        key = m.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    print(
        f"{chosen} chosen + {randoms} random kills; moments: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    print(f"{len(failures)} failed checks" + (":" if failures else ""))
    for failure in failures:
        print(f"  {failure}")
    print(f"run folders in {work}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
