"""The test double of ``engine.ratelimit.Clock``: time moves only when slept on, so no test sleeps."""

from __future__ import annotations


class FakeClock:
    """A clock that only moves when slept on; for tests of pacing and back-off."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
