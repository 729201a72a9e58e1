"""A step process never outlives the run that started it.

Dagster's multiprocess executor runs each step in a child process of the run worker. When the run worker
is killed (``kill -9``, an OOM kill, a node going away), its children are re-parented and would go on
syncing, holding a vendor's rate budget, a warehouse lock or a sync's lease, for as long as their step
takes. ``exit_with_parent()``, called when a step starts, watches the parent through multiprocessing's
own sentinel (closed by the kernel when the parent dies) and ends this process then. A process that is
not a multiprocessing child (a run worker, the CLI's in-process job, a test) is left alone: its parent
dying is its supervisor's business, not a crash.

What the step had in flight is safe to abandon: a warehouse load commits atomically or not at all, and a
push's intents are settled by the next run (``engine.write.push``).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading

_watching = threading.Event()


def exit_with_parent(exit_code: int = 70) -> bool:
    """Start the watch (once per process); True when this process is a child that is now watched."""
    parent = multiprocessing.parent_process()
    if parent is None or _watching.is_set():
        return _watching.is_set()
    _watching.set()

    def watch() -> None:
        parent.join()  # returns when the parent's sentinel closes: it has exited
        print(
            f"integrations_pipeline: the process that started this step (pid {parent.pid}) is gone; "
            f"ending step process {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(exit_code)  # no cleanup handlers: they could block on what the dead parent held

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    return True


__all__ = ["exit_with_parent"]
