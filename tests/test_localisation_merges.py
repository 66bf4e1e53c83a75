"""Protocol 2's merges in a worker thread (runtime/eval/localise/merge_worker.py): results in
order, a bounded queue, errors that name the image, no wait without a bound."""

from __future__ import annotations

import threading
import time

import pytest
from vggspec.runtime.eval.localise import merge_worker as localisation_merges
from vggspec.runtime.eval.localise.merge_worker import BackgroundMerges, MergeFailed


@pytest.mark.parametrize("overlap", [True, False])
def test_results_are_the_merges_of_their_keys(overlap):
    with BackgroundMerges(lambda a, b: a * b, str, overlap) as merges:
        for k in range(200):  # more than the queue holds: the oldest are collected on the way
            merges.submit(k, k, 3)
        assert [merges.result(k) for k in range(200)] == [3 * k for k in range(200)]


def test_the_queue_is_bounded(monkeypatch):
    monkeypatch.setattr(localisation_merges, "MAX_QUEUED", 4)
    seen = []

    def merge(k):
        seen.append(k)
        return k

    with BackgroundMerges(merge, str) as merges:
        for k in range(20):
            merges.submit(k, k)
            assert len(merges.pending) <= 4
        assert [merges.result(k) for k in range(20)] == list(range(20))
    assert seen == list(range(20))


def test_an_error_in_the_main_thread_does_not_wait_for_the_queue():
    release = threading.Event()
    started = time.monotonic()
    merges = BackgroundMerges(lambda: release.wait(60), str)
    with pytest.raises(KeyError, match="forward failed"), merges:
        for k in range(3):
            merges.submit(k)
        raise KeyError("forward failed")
    assert time.monotonic() - started < 10
    release.set()


def test_a_failure_names_the_key_and_chains_the_cause():
    def merge(k):
        if k == 2:
            raise ZeroDivisionError("boom")
        return k

    with BackgroundMerges(merge, lambda k: f"image {k}") as merges:
        for k in range(4):
            merges.submit(k, k)
        assert merges.result(0) == 0
        with pytest.raises(MergeFailed, match="boxes of image 2 failed: ZeroDivisionError: boom"
                           ) as caught:  # fmt: skip
            [merges.result(k) for k in (1, 2)]
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
