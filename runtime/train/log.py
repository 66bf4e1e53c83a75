"""What a run tells people: log lines (or a progress bar on a terminal) and a JSONL of metrics."""

from __future__ import annotations

import json
import sys
import time

from ..io.rundir import RunDir


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _row_step(line: str) -> int | None:
    """The step of a metrics row; None for a line a full disk cut short."""
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return None


class RunLog:
    """Rank 0 prints and writes RUN_DIR/train.log and RUN_DIR/metrics.jsonl; other
    ranks stay quiet. On resume, metrics past the checkpoint's step are dropped, since
    those steps are run again."""

    def __init__(self, run: RunDir, enabled: bool, truncate_after: int = 0):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.total = 0
        self.started = time.perf_counter()
        self.first_step = 0
        self._bar_shown = False
        self._run, self._truncate_after = run, truncate_after
        self._pending: list[str] | None = []  # lines told before `open`

    def open(self) -> None:
        """Start writing into the run folder, beginning with the lines told so far: the
        trainer calls it once every check has passed, so that a refused run writes nothing."""
        if not self.enabled:
            return
        self.metrics_path = self._run.metrics
        truncate_after = self._truncate_after
        if truncate_after and self.metrics_path.exists():
            kept = [
                line
                for line in self.metrics_path.read_text().splitlines()
                if _row_step(line) is not None and _row_step(line) <= truncate_after
            ]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        elif not truncate_after:
            self.metrics_path.write_text("")
        self._metrics = self.metrics_path.open("a")
        self._text = self._run.log.open("a")
        self._text.writelines(self._pending or [])
        self._text.flush()
        self._pending = None

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        self._clear_bar()
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", file=sys.stderr, flush=True)
        if self._pending is not None:
            self._pending.append(f"[{stamp}] {message}\n")
            return
        self._text.write(f"[{stamp}] {message}\n")
        self._text.flush()

    def start_progress(self, total: int, done: int) -> None:
        self.total, self.first_step, self.started = total, done, time.perf_counter()

    def _record(self, row: dict) -> None:
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def step(self, position, loss: float, lr: float, every: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        done = position.step - self.first_step
        rate = position.timed_images / position.train_seconds if position.train_seconds else 0.0
        eta = elapsed / done * (self.total - position.step) if done else 0.0
        line = (
            f"epoch {position.epoch + 1} step {position.step}/{self.total} "
            f"loss {loss:.4f} lr {lr:.3g} {rate:.1f} img/s ETA {_clock(eta)}"
        )
        if position.step % every == 0 or position.step == self.total:
            self._record(
                {
                    "kind": "step",
                    "step": position.step,
                    "epoch": position.epoch,
                    "loss": loss,
                    "lr": lr,
                    "images_per_second": rate,
                }
            )
            if not self.tty:
                self.info(line)
        if self.tty:
            print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
            self._bar_shown = True

    def epoch(self, result: dict) -> None:
        if not self.enabled:
            return
        self._record({"kind": "val", **result})
        if "val_loc_error" in result:  # a box head: protocol 1 on the central crop
            figures = (
                f"GT-class localisation error {result['val_loc_error']:.2%}, "
                f"mean IoU {result['val_mean_iou']:.3f}"
            )
        else:
            top5 = result.get("val_top5_error")
            figures = f"top-1 error {result['val_top1_error']:.2%}" + (
                f", top-5 error {top5:.2%}" if top5 is not None else ""
            )
        self.info(
            f"validation after step {result['step']}: {figures}"
            f", loss {result['val_loss']:.4f} ({result['images']} images)"
        )

    def _clear_bar(self) -> None:
        if self._bar_shown:
            print("\r\033[K", end="", file=sys.stderr)
            self._bar_shown = False

    def close(self) -> None:
        if self.enabled and self._pending is None:
            self._clear_bar()
            self._metrics.close()
            self._text.close()
