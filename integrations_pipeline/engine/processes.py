"""Who is still running: a process's start time, to tell a live holder from a dead one whose pid was reused.

Used by the delivery ledger's leases (``write/ledger.py``) and the warehouse's staging files: both record
the pid and start time of the process that owns them, so the next run can take over at once when that
process is gone (killed with -9, say) instead of waiting for an expiry.
"""

from __future__ import annotations

import os


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``), to tell a pid reused by
    another process from the original; None where ``/proc`` is not available or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime) counted after the parenthesised command name, which may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] == b"Z":  # a zombie has exited; only its exit status is left
        return None
    return float(fields[19])


def process_alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (None: the pid alone says)."""
    now = process_started(pid)
    if now is not None:
        return started is None or now == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Alive per the kernel, but /proc cannot say when it started (another OS): the pid has to do,
    # unless it is a zombie (process_started said None on Linux because it has exited).
    return not os.path.exists(f"/proc/{pid}")


__all__ = ["process_alive", "process_started"]
