"""Proactive rate limiting, kept apart from retries, with budgets that every process can share.

The limiter paces requests *before* they are sent so a well-configured sync never sees a 429; the
retry policy (``engine.client``) only handles the 429s and faults that happen anyway. Keeping them
apart means a retry never skips the pacing and pacing never counts as a retry.

A budget is a rolling window: at most ``requests`` in any ``per_seconds`` interval (pyrate-limiter's
``SlidingWindowLog``). A rolling window is accepted by both server styles we meet (token buckets of the
same rate and capacity, as Trackstar's per-second limit behaves, and rolling hourly budgets, as
SALESmanago's plans do), where a pure token bucket on our side would overrun a rolling-hour server
after its first burst. A budget of a second or a minute is also held to half its requests in half its
window (the same long-run rate in half-bursts), so a vendor's token bucket is never drained to its last
token and a request that arrives a few milliseconds early is still admitted.

Where a budget lives is a ``BudgetStore``, named by a URL the Dagster layer or the CLI hands in (the
engine never reads the environment):

- ``memory://`` — this process only (a client built with no store gets its own, as tests want);
- ``sqlite:///path/budgets.sqlite`` — every process on one machine (pyrate-limiter's ``SQLiteBucket``
  with its file lock), and persisted: a restart does not hand SALESmanago's hourly budget out again;
- ``redis://host:6379/0`` — every process of a deployment (pyrate-limiter's ``RedisBucket``, one atomic
  Lua script per request).

The library decides (count in the window, admit or say how long to wait); this module only keys the
budgets, waits through an injected ``Clock`` and trims old entries. Time comes from ``Clock.time()``
(epoch seconds: processes sharing a budget must share a time line), injected so tests check pacing with
a fake clock (``integrations_pipeline_tests.clock``) instead of wall time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pyrate_limiter import AbstractBucket, InMemoryBucket, Rate, RateItem, RedisBucket, SQLiteBucket

from .errors import ConfigError
from .redact import redact_url

#: How many admitted requests between two trims of a budget's old entries.
LEAK_EVERY = 256


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


def budget_key(*parts: str) -> str:
    """A budget's name from what identifies it (connector, limit, credential): hashed, so a token that
    identifies a budget never reaches a file, a Redis key or a log."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class BudgetStore:
    """Where budgets live (``memory://``, ``sqlite:///path``, ``redis://...``); one bucket per budget key."""

    def __init__(self, url: str = "memory://"):
        self.url = url
        parts = urlsplit(url)
        self.scheme = parts.scheme
        if self.scheme not in ("memory", "sqlite", "redis", "rediss"):
            raise ConfigError(
                f"rate budget store '{self.describe()}': the scheme must be memory://, sqlite:///path or redis://host"
            )
        if self.scheme == "sqlite":
            if not parts.path or parts.path == "/":
                raise ConfigError("rate budget store sqlite:// needs a file path: sqlite:///path/to/budgets.sqlite")
            self.path = Path(parts.path if not parts.netloc else f"/{parts.netloc}{parts.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._redis: Any = None
        self._buckets: dict[str, AbstractBucket] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def describe(self) -> str:
        """The URL without a password (a Redis URL may carry one)."""
        return redact_url(self.url)

    def budget(self, key: str, requests: int, per_seconds: float, clock: Clock, margin: float = 0.02) -> Budget:
        """The budget named ``key``: at most ``requests`` per ``per_seconds`` widened by ``margin``."""
        window_ms = max(1, round(per_seconds * (1 + margin) * 1000))
        name = f"{key}:{requests}:{window_ms}"  # a changed plan is a new budget, not a misread old one
        with self._guard:
            bucket = self._buckets.get(name)
            if bucket is None:
                rates = [Rate(requests, window_ms)]
                burst = first_burst(requests, per_seconds)
                if burst < requests and window_ms >= 2:
                    rates.insert(0, Rate(burst, window_ms // 2))
                bucket = self._buckets[name] = self._open(name, rates)
                self._locks[name] = threading.Lock()
            return Budget(name, bucket, self._locks[name], clock)

    def _open(self, name: str, rates: list[Rate]) -> AbstractBucket:
        if self.scheme == "memory":
            return InMemoryBucket(rates)
        if self.scheme == "sqlite":
            # One table per budget: the bucket counts every row of its table.
            return SQLiteBucket.init_from_file(rates, table=f"budget_{name.replace(':', '_')}", db_path=str(self.path),
                                               use_file_lock=True)  # fmt: skip
        if self._redis is None:
            import redis

            try:
                self._redis = redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5)
                self._redis.ping()
            except redis.RedisError as exc:
                raise ConfigError(f"rate budget store {self.describe()} is not reachable: {exc}") from exc
        return RedisBucket.init(rates, self._redis, f"integrations_pipeline:budget:{name}")

    def close(self) -> None:
        with self._guard:
            for bucket in self._buckets.values():
                close = getattr(bucket, "close", None)
                if close is not None:
                    close()
            self._buckets.clear()
            if self._redis is not None:
                self._redis.close()
                self._redis = None


#: Budgets over windows up to this long (per second, per minute) are spent in half-bursts (``first_burst``).
HALF_BURSTS_UP_TO_SECONDS = 60.0


def first_burst(requests: int, per_seconds: float) -> int:
    """How many requests a budget of ``requests`` per ``per_seconds`` starts at once, and again each half window.

    Half the budget (rounded up) for a window of a second or a minute: the same long-run rate, in half-bursts.
    A vendor's token bucket (Trackstar's: 10, refilled 10/s) drained by a whole burst has nothing left for a
    request of the next burst that arrives a few ms early, and requests do arrive unevenly (two processes on one
    token, a loaded machine: one 429 in 300 measured); after a half-burst it keeps half its tokens to absorb
    that. The whole budget for hourly ones (SALESmanago's): milliseconds of jitter are nothing there, half an
    hour's wait is."""
    if requests >= 2 and per_seconds <= HALF_BURSTS_UP_TO_SECONDS:
        return -(-requests // 2)
    return requests


class Budget:
    """One shared budget as seen by this process: ``acquire`` waits until a request may start."""

    def __init__(self, name: str, bucket: AbstractBucket, lock: threading.Lock, clock: Clock):
        self.name = name
        self.bucket = bucket
        self.lock = lock  # put + waiting read one decision of the bucket: no other thread in between
        self.clock = clock
        self.waited_seconds = 0.0
        self._admitted = 0

    def acquire(self) -> float:
        """Block until a request may start; return how long we waited."""
        waited = 0.0
        while True:
            with self.lock:
                now_ms = round(self.clock.time() * 1000)
                item = RateItem(self.name, now_ms, 1)
                if self.bucket.put(item):
                    self._admitted += 1
                    if self._admitted % LEAK_EVERY == 0:
                        self.bucket.leak(now_ms)
                    self.waited_seconds += waited
                    return waited
                delay_ms = self.bucket.waiting(item)
            if not isinstance(delay_ms, int) or delay_ms < 0:
                raise ConfigError(f"rate budget {self.name}: a single request does not fit the limit")
            # Another process may take the slot first: then the loop waits again.
            delay = max(delay_ms, 1) / 1000
            self.clock.sleep(delay)
            waited += delay


__all__ = ["Budget", "BudgetStore", "Clock", "SystemClock", "budget_key", "first_burst"]
