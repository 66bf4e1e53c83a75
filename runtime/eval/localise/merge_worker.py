"""Protocol 2's merges off the critical path: a worker thread merges the boxes of the images
whose predictions are complete while the next batches run through the nets.

Torch releases the GIL inside its kernels and numpy inside its larger loops, so a merge runs
while a forward pass does, and evaluation is paced by the slower of the two, not their sum.
The results are those of merging in line: the same function on the same boxes, in a thread
of the same process. A merge that raises, or does not finish within MERGE_TIMEOUT_S, stops
the evaluation with an error naming the image; nothing waits without a bound.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# One image's merges (5 classes): about 0.25 s at 1,200 boxes a class on the slowest CPU
# measured (bench/localisation.py), so minutes mean a merge that will not end.
MERGE_TIMEOUT_S = 300.0
# Images queued for the worker at most: past that the forward waits for the oldest, so the
# queue (and the boxes it holds) cannot grow with the data set.
MAX_QUEUED = 64


class MergeFailed(RuntimeError):
    """A merge in the worker raised or did not finish in time (a fault, not a user's mistake:
    the cause is chained)."""


class BackgroundMerges:
    """`submit(key, *args)` runs `merge(*args)` in the worker (or at once, in line, with
    overlap=False); `result(key)` waits for it, at most MERGE_TIMEOUT_S. Use it as a context
    manager: leaving it on an error drops what is still queued."""

    def __init__(
        self, merge: Callable[..., Any], describe: Callable[[Any], str], overlap: bool = True
    ) -> None:
        self.merge, self.describe = merge, describe
        self.pool = (
            cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="box-merge")
            if overlap
            else None
        )
        self.pending: OrderedDict[Any, cf.Future] = OrderedDict()
        self.done: dict[Any, Any] = {}

    def __enter__(self) -> BackgroundMerges:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.pool is not None:
            # On an error, do not wait for the queue; a merge already running ends by itself.
            self.pool.shutdown(wait=kind is None, cancel_futures=True)

    def submit(self, key, *args) -> None:
        if self.pool is None:
            self.done[key] = self._call(key, lambda: self.merge(*args))
            return
        while len(self.pending) >= MAX_QUEUED:
            oldest = next(iter(self.pending))
            self.done[oldest] = self._wait(oldest, self.pending.pop(oldest))
        self.pending[key] = self.pool.submit(self.merge, *args)

    def result(self, key):
        if key in self.pending:
            self.done[key] = self._wait(key, self.pending.pop(key))
        return self.done.pop(key)

    def _wait(self, key, future: cf.Future):
        try:
            return future.result(timeout=MERGE_TIMEOUT_S)
        except cf.TimeoutError:
            raise MergeFailed(
                f"merging the boxes of {self.describe(key)} did not finish in {MERGE_TIMEOUT_S:g} s"
            ) from None
        except Exception as err:
            raise self._failed(key, err) from err

    def _call(self, key, work: Callable[[], Any]):
        try:
            return work()
        except Exception as err:
            raise self._failed(key, err) from err

    def _failed(self, key, err: Exception) -> MergeFailed:
        return MergeFailed(
            f"merging the boxes of {self.describe(key)} failed: {type(err).__name__}: {err}"
        )
