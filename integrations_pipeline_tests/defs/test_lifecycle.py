"""A step process ends when the run worker that started it is killed (``defs.lifecycle.exit_with_parent``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from integrations_pipeline.defs.lifecycle import exit_with_parent

# The "run worker": starts a step the way Dagster's multiprocess executor does (a multiprocessing child),
# prints the step's pid, and waits for ever.
RUN_WORKER = textwrap.dedent("""
    import multiprocessing, sys, time

    def step(ready):
        from integrations_pipeline.defs.lifecycle import exit_with_parent
        ready.put(exit_with_parent())
        time.sleep(3600)  # a long sync

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        ready = ctx.Queue()
        child = ctx.Process(target=step, args=(ready,))
        child.start()
        print(child.pid, ready.get(timeout=120), flush=True)
        time.sleep(3600)
""")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_step_ends_when_its_run_worker_is_killed(tmp_path, method):
    script = tmp_path / "run_worker.py"
    script.write_text(RUN_WORKER)
    worker = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE, text=True)
    try:
        pid_text, watched = worker.stdout.readline().split()
        step = int(pid_text)
        assert watched == "True" and _running(step)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(60)
        deadline = time.monotonic() + 120  # a bound for a loaded machine, not a measured duration
        while _running(step):
            if time.monotonic() > deadline:
                pytest.fail("the orphaned step process kept running")
            time.sleep(0.1)
    finally:
        worker.kill()


def test_a_process_that_is_not_a_multiprocessing_child_is_left_alone():
    assert exit_with_parent() is False
