"""``prefetched``: pages fetched on a worker thread ahead of staging, bounded, in order, errors in place,
and a consumer that stops early stops the worker before it returns (nothing uses the client after)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from integrations_pipeline.engine.read.load import prefetched


def test_items_arrive_in_order_and_all_of_them():
    assert list(prefetched(iter(range(1000)), depth=2)) == list(range(1000))
    assert list(prefetched(iter([]), depth=2)) == []
    assert list(prefetched(iter(range(5)), depth=0)) == list(range(5))  # depth 0: no thread


def test_the_worker_runs_at_most_depth_items_ahead():
    produced: list[int] = []
    gate = threading.Event()

    def pages() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    consumer = prefetched(pages(), depth=2)
    assert next(consumer) == 0
    # The worker fills the hand-off (2) and holds one more, waiting to put it: never more.
    gate.wait(0.5)
    assert len(produced) <= 1 + 2 + 1
    rest = list(consumer)
    assert rest == list(range(1, 100)) and len(produced) == 100


def test_an_error_comes_after_the_items_before_it():
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("page 3 refused")

    seen = []
    with pytest.raises(ValueError, match="page 3 refused"):
        for item in prefetched(pages(), depth=2):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_and_joins_the_worker():
    closed = threading.Event()
    produced: list[int] = []

    def pages() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    consumer = prefetched(pages(), depth=2)
    with pytest.raises(RuntimeError, match="staging failed"):
        for item in consumer:
            if item == 3:
                raise RuntimeError("staging failed")
    consumer.close()
    # Joined: the source was closed on the worker and nothing is produced afterwards.
    assert closed.is_set()
    count = len(produced)
    assert count < 10_000 and len(produced) == count
    assert not any(t.name == "page-prefetch" and t.is_alive() for t in threading.enumerate())
