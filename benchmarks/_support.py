"""Reusable benchmark plumbing: the sandbox server subprocess, timing, and the result table.

- ``SandboxServer``: starts ``benchmarks/_serve.py`` in its own process, waits (bounded) for its
  ``export`` lines, and always stops it (``with`` block / ``close()``: SIGTERM, then SIGKILL).
- ``measure(fn)``: wall-clock seconds of one call, and its result.
- ``Report``: rows of figure, target, PASS/FAIL, printed as one aligned table.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable
T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """A benchmark could not run (server did not start, child process failed)."""


# ----------------------------------------------------------------------------------- server


class SandboxServer:
    """A vendor sandbox in a subprocess (``_serve.py``); ``env`` holds the variables it printed."""

    #: What each vendor's server must print for its connector to reach it.
    REQUIRED = {
        "trackstar": {"TRACKSTAR_BASE_URL", "TRACKSTAR_API_KEY", "TRACKSTAR_ACCESS_TOKEN"},
        "salesmanago": {"SALESMANAGO_BASE_URL", "SALESMANAGO_CLIENT_ID", "SALESMANAGO_API_KEY"},
    }

    def __init__(
        self,
        inventory: int = 0,
        *,
        vendor: str = "trackstar",
        rate_limit: float | None = None,
        latency_ms: float = 0.0,
        seed: int = 0,
        start_timeout: float = 60.0,
        connections: int = 1,
        cache_pages: bool = False,
    ):
        self.connections = connections
        self.cache_pages = cache_pages
        self.vendor = vendor
        self.inventory = inventory
        self.rate_limit = rate_limit
        self.latency_ms = latency_ms
        self.seed = seed
        self.start_timeout = start_timeout
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")

    @property
    def base_url(self) -> str:
        return self.env[f"{self.vendor.upper()}_BASE_URL"]

    def start(self) -> SandboxServer:
        cmd = [PYTHON, str(BENCH_DIR / "_serve.py"), "--vendor", self.vendor, "--seed", str(self.seed)]
        cmd += ["--inventory", str(self.inventory)]
        if self.rate_limit:
            cmd += ["--rate-limit", str(self.rate_limit)]
        if self.latency_ms:
            cmd += ["--latency-ms", str(self.latency_ms)]
        if self.connections != 1:
            cmd += ["--connections", str(self.connections)]
        if self.cache_pages:
            cmd.append("--cache-pages")
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        try:
            self._read_exports()
        except BaseException:
            self.close()
            raise
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.close()
            raise BenchmarkError(f"sandbox server is not on loopback: {self.base_url}")
        return self

    def _read_exports(self) -> None:
        """Collect ``export VAR=value`` lines until ``# ready``; bounded by ``start_timeout``."""
        assert self._proc is not None and self._proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self._proc.stdout

        def pump() -> None:
            # A thread, because a plain readline() on the pipe could block past the deadline.
            for line in stdout:
                lines.put(line)
                if line.startswith("# ready"):
                    break
            lines.put(None)

        threading.Thread(target=pump, name="sandbox-stdout", daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchmarkError(f"sandbox server printed no '# ready' within {self.start_timeout:g} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue  # the deadline check above ends the loop
            if line is None:
                raise BenchmarkError(f"sandbox server exited before it was ready: {self._stderr_tail()}")
            if line.startswith("# ready"):
                break
            if line.startswith("export "):
                var, _, value = line[len("export ") :].strip().partition("=")
                self.env[var] = shlex.split(value)[0] if value else ""
        missing = self.REQUIRED[self.vendor] - set(self.env)
        if missing:
            raise BenchmarkError(f"sandbox server did not print {sorted(missing)}")

    def counts(self) -> dict[str, int]:
        """The sandbox's own request counters (``requests``, ``429``, ``GET /wms/inventory`` ...)."""
        response = httpx.get(self.base_url + "/__bench/counts", timeout=10, trust_env=False)  # loopback, no proxy
        response.raise_for_status()
        return response.json()

    def set_rate_limit(self, per_second: float | None) -> None:
        """Change the sandbox's per-token limit (None: unlimited); every token's bucket starts full."""
        response = httpx.post(
            self.base_url + "/__bench/rate_limit", json={"per_second": per_second}, timeout=10, trust_env=False
        )
        response.raise_for_status()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].strip() or "(no stderr)"

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- child processes


def run_child(script: str, args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``python benchmarks/<script> <args>`` in a fresh process; its last stdout line is a JSON result."""
    child_env = {**os.environ, **env}
    args = [str(BENCH_DIR / script), *args]
    try:
        done = subprocess.run(
            [PYTHON, *args], env=child_env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        # subprocess.run kills the child on timeout before raising.
        raise BenchmarkError(f"{' '.join(args)} took longer than {timeout:g} s") from exc
    if done.returncode != 0:
        raise BenchmarkError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-3000:].strip()}")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    try:
        return json.loads(last)
    except ValueError as exc:
        raise BenchmarkError(f"{' '.join(args)} printed no JSON result: {done.stdout[-500:]!r}") from exc


# ------------------------------------------------------------------------------------- timing


def measure(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of one call of ``fn`` (perf_counter), and what it returned."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def peak_rss_mib() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (Linux reports KiB).

    Caveat (Linux): execve() folds the replaced memory map's high-water mark into ru_maxrss, and a
    child starts as a copy of its parent, so a child spawned by a big process reports at least the
    parent's RSS. ``run.py`` therefore spawns the memory children while it is still small, and
    ``hwm_mib`` gives the uncontaminated figure to cross-check.
    """
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / (1024 * 1024)


def _proc_status_mib(field_name: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024  # "VmHWM:   123456 kB"
    except OSError:
        pass
    return float("nan")  # not Linux: the ru_maxrss figure stands alone


def hwm_mib() -> float:
    """Peak RSS of this process's own memory map (``VmHWM``), in MiB; NaN where /proc is missing."""
    return _proc_status_mib("VmHWM")


def rss_now_mib() -> float:
    """Current RSS (``VmRSS``), in MiB; NaN where /proc is missing."""
    return _proc_status_mib("VmRSS")


# ------------------------------------------------------------------------------------- report


@dataclass
class Row:
    benchmark: str
    figure: str
    value: str
    target: str = ""
    verdict: str = ""  # PASS / FAIL / "" for informational rows


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def info(self, benchmark: str, figure: str, value: str) -> None:
        self.rows.append(Row(benchmark, figure, value))

    def check(self, benchmark: str, figure: str, value: str, target: str, ok: bool) -> None:
        self.rows.append(Row(benchmark, figure, value, target, "PASS" if ok else "FAIL"))

    def error(self, benchmark: str, message: str) -> None:
        self.rows.append(Row(benchmark, "error", message, "", "ERROR"))

    def render(self) -> str:
        header = Row("benchmark", "figure", "value", "target", "result")
        rows = [header, *self.rows]
        widths = [max(len(getattr(r, f)) for r in rows) for f in ("benchmark", "figure", "value", "target", "verdict")]

        def line(r: Row) -> str:
            cells = (r.benchmark, r.figure, r.value, r.target, r.verdict)
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        rule = "  ".join("-" * w for w in widths)
        out = [line(header), rule, *(line(r) for r in self.rows)]
        if self.notes:
            out += ["", *(f"* {n}" for n in self.notes)]
        return "\n".join(out)
