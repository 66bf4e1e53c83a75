"""Items of an iterable produced by a background thread a bounded number ahead of the caller,
in order: decoding the next batch overlaps the net's work on this one in the same process."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# How often a producer whose queue is full looks whether the caller has gone (seconds).
_POLL = 0.05


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of `items`, in their order, each made by a daemon thread while the caller
    works on the one before (at most `depth` waiting). An exception the producer meets is
    raised here, where the caller would have met it, after the items made before it. When the
    caller stops early (a break, an exception of its own, Ctrl-C, `close()`), the producer
    stops after the item at hand and is joined before this returns: nothing keeps running.
    `depth` 0: no thread, the items are made here as they are asked for."""
    if depth == 0:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        # Never blocks for good: a caller that has gone sets `stop` and drains nothing.
        while not stop.is_set():
            try:
                ready.put(entry, timeout=_POLL)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as err:  # handed to the caller, raised there
            put((False, err))
            return
        put((False, None))

    thread = threading.Thread(target=produce, name="vggspec-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, value = ready.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()
