"""Proactive rate limiting, kept apart from retries.

The limiter paces requests *before* they are sent so a well-configured sync never sees a 429; the
retry policy (``engine.client``) only handles the 429s and faults that happen anyway. Keeping them
apart means a retry never skips the pacing and pacing never counts as a retry.

The limiter is a rolling window: at most ``requests`` in any ``per_seconds`` interval. A rolling
window is accepted by both server styles we meet (token buckets of the same rate and capacity, as
Trackstar's per-second limit behaves, and rolling hourly budgets, as SALESmanago's plans do), where a
pure token bucket on our side would overrun a rolling-hour server after its first burst.

Time is injected (``Clock``) so tests check pacing with a fake clock (``integrations_pipeline_tests.clock``)
instead of wall time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class RollingWindowLimiter:
    """At most ``requests`` starts in any window of ``per_seconds`` (times a small safety margin).

    ``margin`` widens the window slightly because our send time and the server's arrival time differ
    by network jitter; 2% keeps us under a 10 req/s limit while still sustaining ~9.8 req/s.
    """

    def __init__(self, requests: int, per_seconds: float, clock: Clock, margin: float = 0.02):
        self.requests = requests
        self.window = per_seconds * (1 + margin)
        self.clock = clock
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Block until a request may start; return how long we waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock.monotonic()
                # The epsilon absorbs float rounding: after sleeping exactly the computed delay,
                # ``now - start`` may land a hair under the window and we must not spin on it.
                while self._starts and now - self._starts[0] >= self.window - 1e-9:
                    self._starts.popleft()
                if len(self._starts) < self.requests:
                    self._starts.append(now)
                    self.waited_seconds += waited
                    return waited
                delay = self.window - (now - self._starts[0])
            self.clock.sleep(delay)
            waited += delay
