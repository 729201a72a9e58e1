"""Nothing lost, nothing sent twice: ``push`` against crashes, races and vendors that fail after applying.

Each doubling the exactly-once issue found is a test here, against the SALESmanago sandbox:

- kill -9 of the pushing process (a real child process, ``_push_child``) between two calls, after an
  intent before the vendor applies its call, and after the vendor applied a call before its record
  (the sandbox's ``pause_write`` knob holds the call so the kill lands there);
- two pushes of one sync at once (the second waits for the lease, or fails naming the holder);
- a vendor that applies part of a batch and then answers 500;
- a warehouse that cannot record what the vendor accepted (disk full);
- a property-style run of random crashes, 5xx-after-apply and retries over a small batch.

Each ends with the target equal to the truth: every event exactly once and every contact present, where
what is neither delivered on a re-run (proved safe) nor refused is in the in-doubt table, and a
person's resolution (``resend`` what the target lacks, ``mark_delivered`` what it has) completes it.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.errors import LeaseLostError, PushBusyError, SyncError
from integrations_pipeline.engine.write.ledger import may_take_from, new_lease
from integrations_pipeline.engine.write.push import push, resend_in_doubt
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.warehouse import connect_warehouse
from integrations_pipeline_tests.clock import FakeClock

from ._push_child import records

SPEC = load_connectors()["salesmanago"]
STATE = "salesmanago/orders_to_events"
N = 6000  # 6 calls of 1,000: the 6,000 Trackstar orders
WAIT = 120.0  # seconds a test waits for a child to reach a point; generous for a loaded machine


# -- the truth and the target --------------------------------------------------------------------


def event_counts(sandbox: SalesmanagoSandbox) -> Counter[str]:
    return Counter(str(e["externalId"]) for e in sandbox.events)


def assert_events_exactly_once(sandbox: SalesmanagoSandbox, n: int = N) -> None:
    counts = event_counts(sandbox)
    doubled = {k: c for k, c in counts.items() if c > 1}
    assert doubled == {}, f"{len(doubled)} events sent more than once"
    assert set(counts) == {f"o{i}" for i in range(n)}


def settle_by_looking_at_the_target(
    warehouse: Any, sandbox: SalesmanagoSandbox, *, clients: ClientFactory, **push_args: Any
) -> None:
    """What a person does with the records in doubt: mark delivered those the target has, resend the rest."""
    doubts = warehouse.read_in_doubt(STATE)
    present = set(event_counts(sandbox))
    there = [d.key for d in doubts if d.key in present]
    missing = [d.key for d in doubts if d.key not in present]
    if there:
        warehouse.resolve_in_doubt(STATE, there, mark_delivered=True)
    if missing:
        report = resend_in_doubt(
            missing,
            spec=SPEC,
            sink_name="events_batch",
            ledger=warehouse,
            state_key=STATE,
            clients=clients,
            **push_args,
        )
        assert report.in_doubt == 0 and report.stopped is None
    assert warehouse.read_in_doubt(STATE) == []


# -- child processes over loopback ---------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[SalesmanagoSandbox, dict[str, str]]]:
    sandbox = SalesmanagoSandbox(requests_per_hour=None)
    with serve({"salesmanago": sandbox}) as servers:
        yield sandbox, sandbox.environment(servers.base_urls["salesmanago"])


def start_child(
    env: dict[str, str],
    warehouse_url: str,
    sink: str,
    *,
    run_id: str,
    n: int = N,
    extra: tuple[str, ...] = (),
    **env_over: str,
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "integrations_pipeline_tests.engine.write._push_child", "--warehouse", warehouse_url,
           "--sink", sink, "--state-key", STATE, "--n", str(n), "--run-id", run_id, *extra]  # fmt: skip
    child_env = {**os.environ, **env, **env_over}
    return subprocess.Popen(
        cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[3]
    )


def finish(child: subprocess.Popen, code: int = 0) -> dict:
    out, err = child.communicate(timeout=600)
    assert child.returncode == code, err
    return json.loads(out) if code == 0 else {"stderr": err}


def kill9(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:  # a hang guard, not a measured duration
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def warehouse_file(tmp_path) -> str:
    return f"duckdb://{tmp_path / 'warehouse.duckdb'}"


def open_warehouse(url: str):
    return connect_warehouse(url)


# -- kill -9 ---------------------------------------------------------------------------------------


def test_kill_after_the_vendor_applied_a_call_before_its_record(served, warehouse_file):
    sandbox, env = served
    pause = sandbox.pause_write(3, stage="after")  # call 3 applied, its answer held back
    child = start_child(env, warehouse_file, "events_batch", run_id="run-killed")
    assert pause.reached.wait(WAIT)
    kill9(child)
    pause.release()
    assert len(sandbox.events) == 3000  # calls 1-3 applied; the process died before recording call 3

    report = finish(start_child(env, warehouse_file, "events_batch", run_id="run-2"))
    assert (report["recovered_intents"], report["held_in_doubt"], report["write_calls"]) == (1, 1000, 3)
    assert all(c == 1 for c in event_counts(sandbox).values()) and len(sandbox.events) == 6000
    with open_warehouse(warehouse_file) as warehouse:
        doubts = warehouse.read_in_doubt(STATE)
        assert sorted(int(d.key[1:]) for d in doubts) == list(range(2000, 3000))
        assert all("run-killed" in d.reason for d in doubts)
        assert len(warehouse.read_delivered(STATE)) == 5000
        # A person checks SALESmanago: those 1,000 are there. Marked delivered, nothing is sent again.
        warehouse.resolve_in_doubt(STATE, None, mark_delivered=True)
    report = finish(start_child(env, warehouse_file, "events_batch", run_id="run-3"))
    assert report["write_calls"] == 0 and report["unchanged"] == N
    assert_events_exactly_once(sandbox)


def test_kill_after_the_intent_before_the_vendor_applied_it(served, warehouse_file):
    sandbox, env = served
    # Call 3 arrives, waits, and is dropped unapplied: the process died with its intent written.
    pause = sandbox.pause_write(3, stage="before", discard=True)
    child = start_child(env, warehouse_file, "events_batch", run_id="run-killed")
    assert pause.reached.wait(WAIT)
    kill9(child)
    pause.release()
    assert len(sandbox.events) == 2000

    report = finish(start_child(env, warehouse_file, "events_batch", run_id="run-2"))
    assert (report["recovered_intents"], report["held_in_doubt"], report["created"]) == (1, 1000, 3000)
    assert len(sandbox.events) == 5000
    # Nobody can tell from our side; a person sees SALESmanago lacks them and resends them, once.
    report = finish(start_child(env, warehouse_file, "events_batch", run_id="run-3", extra=("--resend-in-doubt",)))
    assert (report["considered"], report["created"], report["write_calls"]) == (1000, 1000, 1)
    assert_events_exactly_once(sandbox)
    with open_warehouse(warehouse_file) as warehouse:
        assert warehouse.read_in_doubt(STATE) == [] and len(warehouse.read_delivered(STATE)) == N


def test_kill_between_two_calls(served, warehouse_file):
    sandbox, env = served
    # The child's own plan budget is 2 requests an hour: after two calls it waits for the rate limit
    # (SALESmanago's hourly budget), between recording call 2 and writing the intent of call 3.
    child = start_child(env, warehouse_file, "events_batch", run_id="run-killed", SALESMANAGO_REQUESTS_PER_HOUR="2")
    wait_for(lambda: sandbox.write_calls == 2, "two calls")

    def recorded_two() -> bool:
        with open_warehouse(warehouse_file) as warehouse:
            return len(warehouse.read_delivered(STATE)) == 2000

    wait_for(recorded_two, "the record of call 2")
    kill9(child)
    report = finish(start_child(env, warehouse_file, "events_batch", run_id="run-2"))
    assert (report["recovered_intents"], report["held_in_doubt"], report["created"], report["write_calls"]) == (
        0,
        0,
        4000,
        4,
    )
    assert_events_exactly_once(sandbox)


def test_kill_mid_push_of_an_idempotent_sink_resends_the_unrecorded_call(served, warehouse_file):
    sandbox, env = served
    pause = sandbox.pause_write(2, stage="after")
    child = start_child(env, warehouse_file, "contacts_batch", run_id="run-killed", n=3000)
    assert pause.reached.wait(WAIT)
    kill9(child)
    pause.release()
    with open_warehouse(warehouse_file) as warehouse:
        recorded = len(warehouse.read_delivered(STATE))
        open_intents = len(warehouse.read_intents(STATE))
    # While call 2 was on the wire, the worker recorded call 1 and wrote call 3's intent in one
    # transaction: the kill may have landed before it committed. Every call sent and not recorded has
    # its intent open.
    assert (recorded, open_intents) in {(0, 2), (1000, 2)}
    report = finish(start_child(env, warehouse_file, "contacts_batch", run_id="run-2", n=3000))
    # An upsert in doubt is simply sent again: whatever was not recorded, nothing recorded twice.
    assert report["recovered_intents"] == open_intents
    assert (report["held_in_doubt"], report["created"], report["unchanged"]) == (0, 3000 - recorded, recorded)
    assert set(sandbox.contacts) == {f"c{i}@shop.test" for i in range(3000)}
    with open_warehouse(warehouse_file) as warehouse:
        assert warehouse.read_in_doubt(STATE) == [] and len(warehouse.read_delivered(STATE)) == 3000


# -- two runs at once ----------------------------------------------------------------------------


def test_two_pushes_of_one_sync_at_once_never_push_in_parallel(served, warehouse_file):
    sandbox, env = served
    pause = sandbox.pause_write(1, stage="after")
    first = start_child(env, warehouse_file, "events_batch", run_id="run-A")
    assert pause.reached.wait(WAIT)
    second = start_child(env, warehouse_file, "events_batch", run_id="run-B")
    impatient = start_child(env, warehouse_file, "events_batch", run_id="run-C", extra=("--lease-wait", "0.5"))
    busy = finish(impatient, code=3)
    assert "PushBusyError: sync salesmanago/orders_to_events is being pushed by run run-A (pid" in busy["stderr"]
    time.sleep(1.0)  # run-B is waiting for the lease meanwhile: it must not have sent anything
    assert sandbox.write_calls == 1
    pause.release()
    a, b = finish(first), finish(second)
    assert (a["created"], a["write_calls"]) == (N, 6)
    assert (b["created"], b["write_calls"], b["unchanged"]) == (0, 0, N)
    assert_events_exactly_once(sandbox)


def test_a_lease_left_by_a_killed_holder_frees_itself(served, warehouse_file):
    sandbox, env = served
    pause = sandbox.pause_write(1, stage="after")
    child = start_child(env, warehouse_file, "events_batch", run_id="run-killed")
    assert pause.reached.wait(WAIT)
    kill9(child)
    pause.release()
    # No clean-up by hand: the next push takes the dead holder's lease at once (a short wait suffices).
    report = finish(start_child(env, warehouse_file, "events_batch", run_id="run-2", extra=("--lease-wait", "1")))
    assert report["recovered_intents"] == 1 and report["held_in_doubt"] == 1000
    assert all(c == 1 for c in event_counts(sandbox).values())


# -- in-process: vendors that fail after applying, a warehouse that cannot record ------------------


class Rig:
    """In-process sandbox, DuckDB ledger, a fake clock: push and resend without sleeping."""

    def __init__(self, url: str, sandbox: SalesmanagoSandbox | None = None):
        self.sandbox = sandbox or SalesmanagoSandbox(requests_per_hour=None)
        self.env = self.sandbox.environment("http://salesmanago.sandbox.test")
        self.transport: httpx.BaseTransport = self.sandbox.transport()
        self.warehouse = connect_warehouse(url)
        self.clock = FakeClock(start=1_800_000_000.0)
        self.credentials = Credentials.from_environ(SPEC.name, secret_env_vars(SPEC), self.env)

    def clients(self, transport: httpx.BaseTransport | None = None) -> ClientFactory:
        return ClientFactory(
            self.credentials, transport=transport or self.transport, environ=self.env, clock=self.clock,
            rng=random.Random(0),
        )  # fmt: skip

    def args(self, **over: Any) -> dict[str, Any]:
        return {"spec": SPEC, "ledger": self.warehouse, "state_key": STATE, "clients": self.clients(),
                "clock": self.clock.time, "sleep": self.clock.sleep, **over}  # fmt: skip

    def push(self, recs: list[dict], sink: str = "events_batch", **over: Any):
        return push(recs, sink_name=sink, **self.args(**over))


@pytest.fixture
def rig(warehouse_file) -> Iterator[Rig]:
    r = Rig(warehouse_file)
    try:
        yield r
    finally:
        r.warehouse.close()


def test_a_vendor_that_applies_part_of_a_batch_then_answers_500(rig):
    rig.sandbox.fail_batch_after(300)  # the first call: 300 events stored, then a 500
    report = rig.push(records("events_batch", N))
    assert (report.write_calls, report.retries, report.in_doubt, report.created) == (1, 0, 1000, 0)
    assert report.stopped and "HTTP 500" in report.stopped
    assert len(rig.sandbox.events) == 300  # never retried: no event twice
    again = rig.push(records("events_batch", N))
    assert (again.held_in_doubt, again.created, again.write_calls) == (1000, 5000, 5)
    settle_by_looking_at_the_target(rig.warehouse, rig.sandbox, clients=rig.clients(),
                                    clock=rig.clock.time, sleep=rig.clock.sleep)  # fmt: skip
    assert_events_exactly_once(rig.sandbox)


def test_an_idempotent_sink_retries_the_call_the_vendor_half_applied(rig):
    rig.sandbox.fail_batch_after(300)
    report = rig.push(records("contacts_batch", 2500), sink="contacts_batch")
    assert (report.created, report.retries, report.in_doubt, report.stopped) == (2500, 1, 0, None)
    assert len(rig.sandbox.contacts) == 2500


class FullDisk:
    """The warehouse, except that recording the outcome of call ``fail_at`` fails: ENOSPC."""

    def __init__(self, warehouse: Any, fail_at: int):
        self.warehouse, self.fail_at, self.closed = warehouse, fail_at, 0

    def close_intent(self, *args: Any, **kwargs: Any) -> None:
        self.closed += 1
        if self.closed == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.warehouse.close_intent(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.warehouse, name)


class Journal:
    """The warehouse, writing down the order of intents and records (``open 1``, ``close 1`` ...)."""

    def __init__(self, warehouse: Any):
        self.warehouse, self.calls, self.order = warehouse, {}, []

    def open_intent(self, sink: str, intent: Any, lease: Any) -> None:
        self.calls[intent.call_id] = len(self.calls) + 1
        self.order.append(f"open {self.calls[intent.call_id]}")
        self.warehouse.open_intent(sink, intent, lease)

    def close_intent(self, sink: str, call_id: str, **kwargs: Any) -> None:
        self.warehouse.close_intent(sink, call_id, **kwargs)
        self.order.append(f"close {self.calls[call_id]}")
        if kwargs.get("open_next") is not None:  # the next call's intent, in the same transaction
            upcoming = kwargs["open_next"][0]
            self.calls[upcoming.call_id] = len(self.calls) + 1
            self.order.append(f"open {self.calls[upcoming.call_id]}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.warehouse, name)


def test_an_append_sink_records_each_call_before_the_next_an_idempotent_one_beside_it(rig):
    events = Journal(rig.warehouse)
    rig.push(records("events_batch", 3000), sink="events_batch", ledger=events)
    assert events.order == ["open 1", "close 1", "open 2", "close 2", "open 3", "close 3"]
    contacts = Journal(rig.warehouse)
    rig.push(records("contacts_batch", 3000), sink="contacts_batch", ledger=contacts, state_key="contacts")
    # While call k is sent, a worker records call k-1 and writes call k+1's intent (one transaction):
    # every call is covered by an intent from before it is sent until its record, and everything is
    # recorded before the push returns.
    assert contacts.order == ["open 1", "open 2", "close 1", "open 3", "close 2", "close 3"]
    assert len(rig.warehouse.read_delivered("contacts")) == 3000 and rig.warehouse.read_intents("contacts") == []


class LapsesAfterIntent:
    """The warehouse, where writing intent ``lapse_at`` (ahead of its call) takes the fake clock past the
    lease's ttl, as a long rate-limit wait would, and another run takes the lapsed lease meanwhile."""

    def __init__(self, rig: Rig, ttl: float, lapse_at: int):
        self.rig, self.ttl, self.lapse_at, self.opened = rig, ttl, lapse_at, 0

    def open_intent(self, sink: str, intent: Any, lease: Any) -> None:
        self.rig.warehouse.open_intent(sink, intent, lease)
        self.opened += 1
        if self.opened == self.lapse_at:
            self.rig.clock.sleep(self.ttl + 1)
            now = self.rig.clock.time()
            assert (
                self.rig.warehouse.take_lease(new_lease(sink, "run-other", now, self.ttl), may_take_from(now)) is None
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rig.warehouse, name)


def test_an_intent_written_ahead_is_not_sent_once_the_lease_lapsed_meanwhile(rig):
    ledger = LapsesAfterIntent(rig, ttl=600, lapse_at=2)
    with pytest.raises(LeaseLostError, match="lease is gone"):
        rig.push(records("contacts_batch", 3000), sink="contacts_batch", ledger=ledger, lease_ttl=600)
    # Call 2's intent was written while call 1 was on the wire; by the time call 2 could go, its lease
    # had lapsed and another run held it: call 2 is never sent, call 1 is still recorded, and the intent
    # written ahead for call 2 is gone.
    assert rig.sandbox.write_calls == 1
    assert len(rig.warehouse.read_delivered(STATE)) == 1000 and rig.warehouse.read_intents(STATE) == []


@pytest.mark.parametrize("sink", ["events_batch", "contacts_batch"])
def test_the_vendor_accepted_and_the_warehouse_could_not_record_it(rig, sink):
    with pytest.raises(OSError, match="No space left"):
        rig.push(records(sink, 4000), sink=sink, ledger=FullDisk(rig.warehouse, fail_at=2))
    # An append sink records each call before the next: the push stopped at once, nothing sent after the
    # failure. An idempotent sink records call 2 while call 3 is on the wire: 3 was sent, and recorded on
    # the way out (only call 2's record failed); the intent written ahead for call 4 is gone.
    assert rig.sandbox.write_calls == (2 if sink == "events_batch" else 3)
    assert len(rig.warehouse.read_delivered(STATE)) == (1000 if sink == "events_batch" else 2000)
    unrecorded = 1
    rig.clock.sleep(3600)  # the failed run's lease: it released it on the way out, or it expired
    report = rig.push(records(sink, 4000), sink=sink)
    assert report.recovered_intents == unrecorded
    if sink == "events_batch":
        assert (report.held_in_doubt, report.created) == (1000, 2000)
        settle_by_looking_at_the_target(rig.warehouse, rig.sandbox, clients=rig.clients(),
                                        clock=rig.clock.time, sleep=rig.clock.sleep)  # fmt: skip
        assert_events_exactly_once(rig.sandbox, 4000)
    else:
        assert (report.held_in_doubt, report.created) == (0, 2000)  # call 2's contacts again, and call 4's
        assert len(rig.sandbox.contacts) == 4000


class SessionLease:
    """The warehouse, as if its leases were a database session's lock (PostgreSQL), counting renewals."""

    session_bound_leases = True

    def __init__(self, warehouse: Any):
        self.warehouse, self.renewed = warehouse, 0

    def renew_lease(self, lease: Any) -> None:
        self.renewed += 1
        self.warehouse.renew_lease(lease)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.warehouse, name)


def test_a_lease_held_by_a_session_is_checked_before_every_call_written_ahead(rig):
    # The session may have dropped while the previous call was on the wire, taking its lock (and so the
    # lease) with it: each call whose intent was written ahead checks first, however fresh the lease.
    ledger = SessionLease(rig.warehouse)
    rig.push(records("contacts_batch", 3000), sink="contacts_batch", ledger=ledger)
    assert ledger.renewed == 2  # calls 2 and 3; call 1's intent was written just before it, with the lease
    fresh = SessionLease(rig.warehouse)
    fresh.session_bound_leases = False
    again = rig.push(records("contacts_batch", 3000), sink="contacts_batch", ledger=fresh, state_key="another sync")
    assert again.write_calls == 3 and fresh.renewed == 0  # an expiring lease (DuckDB): fresh enough


def test_a_cancelled_push_records_what_was_sent_and_drops_the_intent_written_ahead(rig, monkeypatch):
    """A run cancelled in the UI interrupts the push where it waits (the rate limiter, the vendor): not a
    crash. The call already sent is recorded on the way out, the intent written for the next one goes."""
    from integrations_pipeline.engine.write.sinks import SinkWriter

    paced = {"n": 0}
    original = SinkWriter.pace

    def pace(self: SinkWriter) -> None:
        paced["n"] += 1
        if paced["n"] == 3:
            raise KeyboardInterrupt  # what Dagster's termination raises in the step's thread
        original(self)

    monkeypatch.setattr(SinkWriter, "pace", pace)
    with pytest.raises(KeyboardInterrupt):
        rig.push(records("contacts_batch", 4000), sink="contacts_batch")
    assert rig.sandbox.write_calls == 2
    assert len(rig.warehouse.read_delivered(STATE)) == 2000 and rig.warehouse.read_intents(STATE) == []


def test_emails_differing_only_in_case_are_one_contact_and_one_delivery(rig):
    recs = [
        {"contact": {"email": "Case@Shop.test", "name": "A"}},
        {"contact": {"email": "case@shop.test", "name": "B"}},
    ]
    report = rig.push(recs, sink="contacts_batch")
    assert (report.created, report.superseded, report.write_calls) == (1, 1, 1)
    assert rig.warehouse.read_delivered(STATE).keys() == {"case@shop.test"}
    assert rig.push(recs, sink="contacts_batch").write_calls == 0


def test_a_second_push_waits_for_the_lease_and_then_sends_nothing_twice(rig, warehouse_file):
    # In one process (a sensor tick and a manual run on one code server): the lease holder is alive.
    from threading import Thread

    pause = rig.sandbox.pause_write(1, stage="after")
    results: dict[str, Any] = {}
    first = Thread(target=lambda: results.setdefault("first", rig.push(records("events_batch", 2000))))
    first.start()
    assert pause.reached.wait(WAIT)
    other = Rig(warehouse_file, rig.sandbox)
    try:
        with pytest.raises(PushBusyError, match=r"is being pushed by run manual \(pid \d+"):
            other.push(records("events_batch", 2000), lease_wait=0.2, clock=time.time, sleep=time.sleep)
        pause.release()
        first.join(60)
        assert results["first"].created == 2000
        assert other.push(records("events_batch", 2000)).write_calls == 0
    finally:
        pause.release()
        other.warehouse.close()
    assert_events_exactly_once(rig.sandbox, 2000)


# -- property-style: random crashes, vendor failures and retries ------------------------------------


class Crash(BaseException):
    """The process dies here (BaseException: nothing in the push may catch it)."""


class Chaos(httpx.BaseTransport):
    """The sandbox, with faults drawn from ``rng``: a 500 after applying part of a batch, a 429, a
    timeout after the vendor applied the call, or the client process dying after the call applied."""

    def __init__(self, sandbox: SalesmanagoSandbox, rng: random.Random):
        self.sandbox, self.rng, self.inner = sandbox, rng, sandbox.transport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        roll = self.rng.random()
        if roll < 0.15:
            self.sandbox.fail_batch_after(self.rng.randrange(0, 5))
        elif roll < 0.25:
            return httpx.Response(429, json={"success": False, "message": ["slow down"]}, headers={"retry-after": "1"})
        response = self.inner.handle_request(request)
        if 0.25 <= roll < 0.35:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if 0.35 <= roll < 0.45:
            raise Crash("killed after the vendor applied the call")
        return response


class CrashingLedger:
    """The warehouse, dying (``Crash``) at one random ledger step of the run."""

    def __init__(self, warehouse: Any, rng: random.Random):
        self.warehouse = warehouse
        self.step = rng.randrange(0, 12) if rng.random() < 0.5 else -1
        self.count = 0

    def _maybe(self) -> None:
        self.count += 1
        if self.count == self.step:
            raise Crash(f"killed at ledger step {self.step}")

    def open_intent(self, *a: Any, **k: Any) -> None:
        self._maybe()
        self.warehouse.open_intent(*a, **k)
        self._maybe()

    def close_intent(self, *a: Any, **k: Any) -> None:
        self._maybe()
        self.warehouse.close_intent(*a, **k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.warehouse, name)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("sink", ["events_batch", "contacts_batch"])
def test_random_crashes_and_failures_never_lose_or_double_a_record(tmp_path, seed, sink):
    rng = random.Random(seed)
    url = f"duckdb://{tmp_path / 'w.duckdb'}"
    small = SPEC.model_copy(
        update={"sinks": {**SPEC.sinks, sink: SPEC.sinks[sink].model_copy(update={"batch_size": 5})}}
    )
    r = Rig(url)
    chaos = Chaos(r.sandbox, rng)
    truth = records(sink, 23)
    try:
        for _attempt in range(30):
            try:
                ledger = CrashingLedger(r.warehouse, rng)
                transport = chaos if rng.random() < 0.7 else r.transport
                report = push(truth, sink_name=sink, **r.args(spec=small, ledger=ledger, clients=r.clients(transport)))
            except Crash:
                r.clock.sleep(3600)  # the dead run's lease expires
                continue
            except SyncError:
                continue  # a run that failed (its 429s outlasted the retry policy): the next run goes on
            if report.stopped is None and report.held_in_doubt == 0:
                break
            if sink == "events_batch" and rng.random() < 0.5:
                settle_by_looking_at_the_target(r.warehouse, r.sandbox, clients=r.clients(),
                                                clock=r.clock.time, sleep=r.clock.sleep)  # fmt: skip
        else:
            pytest.fail("the pushes never completed")
        if sink == "events_batch":
            counts = event_counts(r.sandbox)
            assert all(c == 1 for c in counts.values()), "an event was sent twice"
            assert set(counts) == {f"o{i}" for i in range(23)}
        else:
            assert set(r.sandbox.contacts) == {f"c{i}@shop.test" for i in range(23)}
            assert all(r.sandbox.contacts[f"c{i}@shop.test"]["name"] == f"Name {i}" for i in range(23))
        assert r.warehouse.read_in_doubt(STATE) == [] and r.warehouse.read_intents(STATE) == []
    finally:
        r.warehouse.close()


@pytest.mark.postgres
def test_on_postgresql_a_killed_holder_frees_its_lease_with_its_session(served, postgres_url):
    """On PostgreSQL the lease is also a session advisory lock: the server drops it with the dead
    holder's connection, so the next push starts at once and finds the call in doubt."""
    sandbox, env = served
    pause = sandbox.pause_write(2, stage="after")
    child = start_child(env, postgres_url, "events_batch", run_id="run-killed", n=3000)
    assert pause.reached.wait(WAIT)
    kill9(child)
    pause.release()
    report = finish(
        start_child(env, postgres_url, "events_batch", run_id="run-2", n=3000, extra=("--lease-wait", "10"))
    )
    assert (report["recovered_intents"], report["held_in_doubt"], report["created"]) == (1, 1000, 1000)
    with open_warehouse(postgres_url) as warehouse:
        assert sorted(int(d.key[1:]) for d in warehouse.read_in_doubt(STATE)) == list(range(1000, 2000))
        warehouse.resolve_in_doubt(STATE, None, mark_delivered=True)
    assert_events_exactly_once(sandbox, 3000)


# -- settling an in-doubt upsert by reading the target back ------------------------------------------


def contacts(n: int, version: str = "") -> list[dict]:
    return [
        {"contact": {"email": f"c{i}@shop.test", "name": f"Name {i}{version}"}, "properties": {"tier": "gold"}}
        for i in range(n)
    ]


def test_an_upsert_in_doubt_is_settled_by_reading_it_back(rig):
    # The single-record upsert: reading back (50 emails a call) costs no more than re-sending (1 a call).
    with pytest.raises(OSError, match="No space left"):
        rig.push(contacts(6), sink="contacts", ledger=FullDisk(rig.warehouse, fail_at=3))
    # Contact 2 was applied and its record failed while contact 3's call was sent; contact 3's outcome was
    # recorded on the way out, contact 2's intent stayed.
    assert rig.sandbox.write_calls == 4
    before = rig.sandbox.write_calls
    report = rig.push(contacts(6), sink="contacts")
    assert (report.recovered_intents, report.settled_by_read, report.created) == (1, 1, 2)
    assert rig.sandbox.write_calls - before == 2  # c4, c5 only: c2 and c3 were not sent again
    assert rig.sandbox.counts["POST /api/contact/basic"] == 1  # one read back per unrecorded call
    assert rig.warehouse.read_delivered(STATE).keys() == {f"c{i}@shop.test" for i in range(6)}


def test_a_read_back_that_differs_from_what_was_sent_is_sent_again(rig):
    with pytest.raises(OSError, match="No space left"):
        rig.push(contacts(3), sink="contacts", ledger=FullDisk(rig.warehouse, fail_at=2))
    rig.sandbox.contacts["c1@shop.test"]["name"] = "Changed elsewhere"  # the call's effect is not what the target shows
    report = rig.push(contacts(3), sink="contacts")
    # Call 2 (c1) never recorded (call 3's outcome was, on the way out): c1 does not read back as sent and
    # is sent again.
    assert (report.recovered_intents, report.settled_by_read, report.created) == (1, 0, 1)
    assert rig.sandbox.contacts["c1@shop.test"]["name"] == "Name 1"


def test_a_batch_upsert_in_doubt_is_sent_again_rather_than_read_back(rig):
    # 1,000 contacts a call to send, 50 a call to read: re-sending costs fewer calls.
    with pytest.raises(OSError, match="No space left"):
        rig.push(contacts(150), sink="contacts_batch", ledger=FullDisk(rig.warehouse, fail_at=1))
    report = rig.push(contacts(150), sink="contacts_batch")
    assert (report.recovered_intents, report.settled_by_read, report.created) == (1, 0, 150)
    assert rig.sandbox.counts["POST /api/contact/basic"] == 0


def test_shows_compares_what_was_sent():
    from integrations_pipeline.engine.write.push import shows

    compare = {"contact.name": "name", "contact.phone": "phone", "properties": "properties"}
    sent = {"contact": {"email": "a@b.se", "name": "A", "phone": 123}, "properties": {"tier": "gold"}}
    assert shows(compare, sent, {"name": "A", "phone": "123", "properties": {"tier": "gold", "other": "x"}})
    assert not shows(compare, sent, {"name": "A", "phone": "123", "properties": {"tier": "silver"}})
    assert not shows(compare, sent, {"name": "B", "phone": "123", "properties": {"tier": "gold"}})
    assert shows(compare, {"contact": {"email": "a@b.se"}}, {"name": "anything"})  # nothing compared was sent
