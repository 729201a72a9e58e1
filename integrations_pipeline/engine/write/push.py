"""One reverse-ETL push: plan → (per call) intent → send → record, under a lease, with nothing lost or sent twice.

``push(records, ...)`` is the whole write side of a sync, with no Dagster in it (the sink IO manager,
the CLI and the benchmarks call it). Each step happens once, in one place:

1. **lease** (``ledger.Lease``): one writer per sync. A second push of the same sync waits for it
   (``lease_wait`` seconds) and then fails with ``PushBusyError`` naming the holder; a holder that
   died (kill -9) or let its lease expire loses it, with no clean-up by hand;
2. **recover**: intents left by a push that never recorded its call (killed, disk full) are settled:
   for an idempotent sink (upsert, insert_once, delete) their records are read back where the sink's
   ``read`` block says what to compare and reading costs no more calls than re-sending (what the
   target shows as sent is recorded delivered), and the rest are simply not delivered, so the plan
   sends them again; for an append sink (events) they go to the in-doubt table, never re-sent on
   their own;
3. **plan** (``plan.plan``): de-duplicate, validate, diff against the delivered state, hold keys in
   doubt; validation rejects are recorded;
4. per call of ``plan.batches()``: wait for the rate-limit slot, then **intent** (a write-ahead row with
   the call's keys, hashes and, where recovery needs them, records; it renews the lease), **send** (one
   call, ``sinks.SinkWriter.send``), **record** (one transaction: what the answer proves delivered, rejects
   with their reasons, records in doubt, the intent closed). For an idempotent sink, call k-1's record
   and call k+1's intent are written (one transaction) while call k is on the wire (``_send_all``).

A call in doubt stops the push (the vendor is failing; what is left is sent by the next run): the
report says why in ``stopped``. A call that failed as a whole without applying anything (credentials
refused, retries exhausted on an idempotent call) is recorded, then its error raised.

**Dry run**: the plan (``create``, ``update``, ``delete``, ``reject``, ``in_doubt`` rows) goes to
``ledger.record_plan`` and no client is built, so nothing can reach the vendor.

The delivered state is keyed by ``state_key``, the sync (its asset), not by the endpoint: two syncs
into one sink do not see each other's keys as deleted, and routing a sync through a proxy (SALESmanago
via Datatalks) keeps its history, so events already sent are not sent again by the new route.

``send_unrecorded`` plans and sends with no bookkeeping (one-off sends, the conformance suite).
``resend_in_doubt`` and ``resolve_in_doubt`` settle records in doubt, the one through the same intent →
send → record steps, the other by a person's word that the target has them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from ..client import ClientFactory
from ..errors import LeaseLostError, PushBusyError, SyncError
from ..spec import ConnectorSpec, SinkSpec
from .keys import MISSING, Record, get_path
from .ledger import DeliveryLedger, InDoubt, Intent, Lease, may_take_from, new_lease, renewed
from .plan import Item, Plan, plan
from .reads import SinkReader
from .sinks import CallResult, Outcome, SinkWriter, WriteReport

#: How many rejects and keys in doubt a report keeps for logs (all of them are in the ledger).
SHOWN = 20
#: A lease lasts this long unless renewed (each call renews it); a dead holder loses it at once.
LEASE_TTL_SECONDS = 15 * 60
#: How long a push waits for another run's push of the same sync before failing.
LEASE_WAIT_SECONDS = 120.0


@dataclass
class PushReport:
    """What one push did (or, in a dry run, would do). ``rejects``/``in_doubt_keys`` hold the first few."""

    state_key: str
    sink: str
    dry_run: bool
    considered: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    skipped_insert_once: int = 0
    superseded: int = 0
    in_doubt: int = 0  # records this push put in doubt (calls whose outcome is unknown)
    held_in_doubt: int = 0  # records not sent because an earlier call left them in doubt
    recovered_intents: int = 0  # calls of an earlier push that never recorded their outcome
    settled_by_read: int = 0  # records of those calls the target showed as delivered when read back
    write_calls: int = 0
    retries: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why the push stopped before sending everything
    rejects: list[tuple[Any, str]] = field(default_factory=list)
    in_doubt_keys: list[str] = field(default_factory=list)


def push(
    records: Sequence[Record],
    *,
    spec: ConnectorSpec,
    sink_name: str,
    ledger: DeliveryLedger,
    state_key: str,
    clients: ClientFactory,
    dry_run: bool = False,
    run_id: str = "manual",
    on_plan: Callable[[Plan], None] | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    lease_ttl: float = LEASE_TTL_SECONDS,
    lease_wait: float = LEASE_WAIT_SECONDS,
) -> PushReport:
    """Push ``records`` to ``spec``'s sink ``sink_name``; see the module docstring.

    ``clients`` builds the sink's client, only when something must be sent or read back (never in a dry
    run, never for a re-run with nothing changed).
    """
    started = time.perf_counter()
    sink = spec.sinks[sink_name]
    say = log or (lambda message: None)
    report = PushReport(state_key=state_key, sink=f"{spec.name}/{sink_name}", dry_run=dry_run, considered=len(records))
    if dry_run:
        planned = plan(
            sink, records, ledger.read_delivered(state_key), [d.key for d in ledger.read_in_doubt(state_key)]
        )
        if on_plan is not None:
            on_plan(planned)
        _count_plan(report, planned)
        report.created, report.updated, report.rejected = planned.created, planned.updated, len(planned.rejected)
        report.rejects = [(r.key, r.reason) for r in planned.rejected[:SHOWN]]
        rows = planned.rows()
        if rows:
            ledger.record_plan(state_key, run_id, rows)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    settle = read_back_settler(spec, sink_name, clients, say)
    with (
        ledger.session(),
        hold_lease(ledger, state_key, run_id=run_id, ttl=lease_ttl, wait=lease_wait, clock=clock, sleep=sleep) as lease,
    ):
        report.recovered_intents, report.settled_by_read = recover_intents(ledger, state_key, sink, say, settle)
        in_doubt = ledger.read_in_doubt(state_key)
        planned = plan(sink, records, ledger.read_delivered(state_key), [d.key for d in in_doubt])
        if on_plan is not None:
            on_plan(planned)
        _count_plan(report, planned)
        report.rejected = len(planned.rejected)
        report.rejects = [(r.key, r.reason) for r in planned.rejected[:SHOWN]]
        if planned.rejected:
            ledger.record_rejects(state_key, [(r.key, r.reason, r.record) for r in planned.rejected])
        if planned.to_send:
            with (
                SinkWriter(clients.sink(spec, sink_name), spec, sink_name) as writer,
            ):
                _send_all(
                    planned.batches(),
                    writer,
                    ledger,
                    state_key,
                    lease,
                    report,
                    run_id,
                    clock,
                    lease_ttl,
                    say,
                    planned=True,
                )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def send_unrecorded(writer: SinkWriter, records: Iterable[Record]) -> WriteReport:
    """Plan ``records`` with nothing delivered before, then send every batch through ``writer``, with no
    lease, intent or record: for one-off sends and the sink conformance suite (a sync goes through
    ``push``, which makes each call exactly once across crashes and runs).

    A failure that applied nothing raises the client's error once the completed calls are in
    ``exc.partial_report``; a call in doubt does not raise (its records say ``in_doubt``) but ends the
    send: the records after it are not attempted and have no outcome.
    """
    planned = plan(writer.sink, list(records), {})
    report = WriteReport(sink=writer.name, superseded=planned.superseded)
    outcomes = [Outcome(r.index, r.key, "rejected", r.reason, stage="validation") for r in planned.rejected]
    try:
        for batch in planned.batches():
            result = writer.send(batch)
            outcomes += result.outcomes
            report.calls += result.calls
            report.retries += result.retries
            if result.error is not None:
                result.error.partial_report = report  # type: ignore[attr-defined]
                raise result.error
            if result.of("in_doubt"):
                break
    finally:
        report.outcomes = sorted(outcomes, key=lambda o: o.index)
    return report


def resend_in_doubt(
    keys: Sequence[str] | None,
    *,
    spec: ConnectorSpec,
    sink_name: str,
    ledger: DeliveryLedger,
    state_key: str,
    clients: ClientFactory,
    run_id: str = "manual",
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    lease_ttl: float = LEASE_TTL_SECONDS,
    lease_wait: float = LEASE_WAIT_SECONDS,
) -> PushReport:
    """Send the records in doubt for ``keys`` (None: all) again, as they were first sent, through the
    same intent → send → record steps; a person asks for this after checking the target lacks them."""
    started = time.perf_counter()
    sink = spec.sinks[sink_name]
    say = log or (lambda message: None)
    report = PushReport(state_key=state_key, sink=f"{spec.name}/{sink_name}", dry_run=False)
    with (
        ledger.session(),
        hold_lease(ledger, state_key, run_id=run_id, ttl=lease_ttl, wait=lease_wait, clock=clock, sleep=sleep) as lease,
    ):
        report.recovered_intents, _ = recover_intents(ledger, state_key, sink, say)
        wanted = None if keys is None else set(keys)
        rows = [d for d in ledger.read_in_doubt(state_key) if wanted is None or d.key in wanted]
        report.considered = len(rows)
        items = [Item(index, d.key, d.hash, d.record) for index, d in enumerate(rows)]
        batches = [items[i : i + sink.batch_size] for i in range(0, len(items), sink.batch_size)]
        if batches:
            with (
                SinkWriter(clients.sink(spec, sink_name), spec, sink_name) as writer,
            ):
                _send_all(batches, writer, ledger, state_key, lease, report, run_id, clock, lease_ttl, say)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


Settler = Callable[[tuple[tuple[str, str, Any], ...]], list[tuple[str, str, Any]]]


def recover_intents(
    ledger: DeliveryLedger, state_key: str, sink: SinkSpec, say: Callable[[str], None], settle: Settler | None = None
) -> tuple[int, int]:
    """Settle the intents an earlier push left (call this holding the lease): see the module docstring.
    Returns how many intents there were and how many of their records were read back as delivered.

    ``settle`` (``read_back_settler``) reads an idempotent sink's target back: what it shows as sent is
    recorded delivered, so only the rest is sent again."""
    intents = ledger.read_intents(state_key)
    read_back = 0
    for intent in intents:
        if sink.idempotent:
            # Re-sending is harmless: not recording them as delivered makes the plan send them again.
            settled = settle(intent.items) if settle is not None else []
            read_back += len(settled)
            ledger.close_intent(state_key, intent.call_id, delivered=settled)
            say(
                f"{state_key}: call {intent.call_id} of run {intent.run_id} never recorded its answer; "
                f"{len(settled)} of its {len(intent.items)} records read back as delivered, the rest will be sent "
                "again (the sink is idempotent)"
            )
            continue
        reason = (
            f"run {intent.run_id} stopped after writing the intent of call {intent.call_id} and before recording "
            "its answer: the vendor may or may not have applied it"
        )
        doubts = [
            InDoubt(key, digest, record, intent.call_id, intent.run_id, reason) for key, digest, record in intent.items
        ]
        ledger.close_intent(state_key, intent.call_id, in_doubt=doubts)
        say(f"{state_key}: {len(doubts)} records of call {intent.call_id} (run {intent.run_id}) are in doubt: {reason}")
    return len(intents), read_back


def read_back_settler(
    spec: ConnectorSpec,
    sink_name: str,
    clients: ClientFactory,
    say: Callable[[str], None],
) -> Settler | None:
    """For an idempotent sink whose ``read`` block says what to ``compare``: a function that reads the
    records of a call in doubt back from the target and returns those it shows as sent. It reads only
    when that costs no more calls than sending them again (SALESmanago's single upsert: 50 read per call;
    its batch upsert: 1,000 sent per call, so re-sending wins there)."""
    sink = spec.sinks[sink_name]
    read = sink.read
    if not sink.idempotent or read is None or not read.compare:
        return None

    def settle(items: tuple[tuple[str, str, Any], ...]) -> list[tuple[str, str, Any]]:
        n = len(items)
        if not reads_back(sink, n):
            return []
        try:
            with SinkReader(clients.sink(spec, sink_name), spec, sink_name) as reader:
                found = reader.read([key for key, _, _ in items]).found
        except SyncError as exc:
            say(f"reading back {n} records in doubt failed ({exc}): they will be sent again")
            return []
        return [
            (key, digest, {"settled_by_read": True})
            for key, digest, record in items
            # No record kept (the intent was written when reading back did not pay): nothing to compare.
            if record is not None and key in found and shows(read.compare, record, found[key])
        ]

    return settle


def reads_back(sink: SinkSpec, n: int) -> bool:
    """Whether ``n`` records of an unrecorded call to ``sink`` are settled by reading the target back:
    an idempotent sink with a ``read`` block naming what to compare, where reading them costs no more
    calls than sending them again."""
    read = sink.read
    if not n or not sink.idempotent or read is None or not read.compare:
        return False
    return -(-n // read.batch_size) <= -(-n // sink.batch_size)


def shows(compare: Mapping[str, str], sent: Any, current: Any) -> bool:
    """Whether ``current`` (a record read back) shows every compared field of ``sent`` as sent; a sent map
    needs only its own entries there (the vendor merges maps), a value equal as text is equal."""
    for write_path, read_path in compare.items():
        value = get_path(sent, write_path)
        if value is MISSING or value is None:
            continue
        there = get_path(current, read_path)
        if isinstance(value, dict):
            if not isinstance(there, dict) or any(not _same(v, there.get(k)) for k, v in value.items()):
                return False
        elif not _same(value, there):
            return False
    return True


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    scalar = (str, int, float, bool)
    return isinstance(a, scalar) and isinstance(b, scalar) and str(a) == str(b)


@contextmanager
def hold_lease(
    ledger: DeliveryLedger,
    name: str,
    *,
    run_id: str,
    ttl: float,
    wait: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Lease]:
    """Hold the lease ``name`` for the block, waiting up to ``wait`` seconds for another holder."""
    lease = new_lease(name, run_id, clock(), ttl)
    deadline = clock() + wait
    delay = 0.05
    while True:
        now = clock()
        lease = renewed(lease, now, ttl)
        held = ledger.take_lease(lease, may_take_from(now))
        if held is None:
            break
        if now >= deadline:
            raise PushBusyError(
                f"sync {name} is being pushed by {held.describe()}; waited {wait:g} s. It runs again once that "
                "push ends; a holder that died loses the lease at once (same host) or when it expires"
            )
        sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * 2, 2.0)
    try:
        yield lease
    finally:
        ledger.release_lease(name, lease.token)


def _count_plan(report: PushReport, planned: Plan) -> None:
    report.unchanged = len(planned.unchanged)
    report.deleted = len(planned.deleted)
    report.skipped_insert_once = len(planned.skipped_insert_once)
    report.superseded = planned.superseded
    report.held_in_doubt = len(planned.held)


def _send_all(
    batches: list[list[Item]],
    writer: SinkWriter,
    ledger: DeliveryLedger,
    state_key: str,
    lease: Lease,
    report: PushReport,
    run_id: str,
    clock: Callable[[], float],
    ttl: float,
    say: Callable[[str], None],
    *,
    planned: bool = False,
) -> None:
    """Intent → send → record for each batch, in order, stopping at the first call in doubt or failed.

    An append sink does each step in turn: a crash leaves at most one call in doubt for a person to
    settle. For an idempotent sink the bookkeeping leaves the critical path: while call k is on the wire,
    a worker thread records call k-1 and writes call k+1's intent (one transaction), so every call is
    still covered by an intent from before it is sent until its record. A crash then leaves two intents
    open (k-1 unrecorded and k sent, or k sent and k+1 not), which costs an idempotent sink a re-send (or
    a read back) of one more batch, never a double; a push that ends early without a crash records what
    it sent and deletes the intent it wrote ahead (``_Books.close``).

    ``planned``: the batches come from this push's plan, under its lease, so the keys it plans to
    ``create`` have no delivered row and are recorded as ``delivered_new`` (a resend's keys come from the
    in-doubt table, which a person may settle meanwhile: recorded as ``delivered``)."""
    sink = writer.sink
    total = len(batches)
    books = _Books(ledger, state_key, lease, clock, ttl, ahead=sink.idempotent)

    def intent_for(batch: list[Item]) -> Intent:
        # The records go into the intent only where recovery uses them: put in doubt (an append sink)
        # or compared with what the target shows. Otherwise keys and hashes say what to send again.
        keep = not sink.idempotent or reads_back(sink, len(batch))
        return Intent(
            uuid.uuid4().hex,
            run_id,
            clock(),
            tuple((i.key, i.hash, i.record if keep else None) for i in batch),
            tuple(i.encoded for i in batch) if keep else (),
        )

    try:
        for number, batch in enumerate(batches, start=1):
            # The rate-limit wait comes before the call's intent counts as written: a lease that expired
            # while waiting is caught (``_Books.opened``) before anything is sent.
            writer.pace()
            try:
                intent = books.opened(batch, intent_for, report, number, total)
            except LeaseLostError:
                # What was sent is still recorded on the way out (``_Books.close``; the ledger upserts it if
                # the new holder settled it meanwhile).
                report.stopped = f"lost the lease on {state_key} before call {number} of {total}"
                raise
            books.beside_send(batches[number] if number < total else None, intent_for)
            result = writer.send(batch)
            try:
                books.sent(intent, _outcome_rows(intent, batch, result, sink, report, planned=planned))
            except BaseException:  # an append sink records at once
                report.stopped = f"recording call {number} of {total} failed; its intent stays for the next run"
                raise
            if result.error is not None:
                books.finish(report, number, total)
                report.stopped = f"call {number} of {total} failed: {result.error}"
                raise result.error
            doubtful = result.of("in_doubt")
            if doubtful:
                books.finish(report, number, total)
                fate = (
                    "in the in-doubt table"
                    if not sink.idempotent
                    else "not recorded as delivered (sent again next run)"
                )
                report.stopped = (
                    f"call {number} of {total}: {len(doubtful)} records in doubt ({fate}): {doubtful[0].reason}"
                )
                say(f"{state_key}: {report.stopped}")
                return
        books.finish(report, total, total)
    finally:
        books.close()


_Rows = tuple[list[Any], list[Any], list[InDoubt], list[Any]]  # delivered, rejects, in doubt, delivered new


class _Books:
    """The intents and records of one push's calls. In turn (``ahead=False``), or by one worker thread
    that writes, while call k is sent, call k-1's record and call k+1's intent in one transaction (at
    most one record is outstanding, and a record that failed stops the push before call k+1 is sent).

    A lease renewed ahead may have aged while the rate limiter waited (SALESmanago's hourly budget): past
    a quarter of its ttl (or always, where the lease lives in a database session) it is renewed again
    before the call, so a run whose lease lapsed never sends."""

    def __init__(
        self,
        ledger: DeliveryLedger,
        state_key: str,
        lease: Lease,
        clock: Callable[[], float],
        ttl: float,
        *,
        ahead: bool,
    ):
        self._ledger, self._state_key, self._lease, self._clock, self._ttl = ledger, state_key, lease, clock, ttl
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-books") if ahead else None
        self._sent: tuple[Intent, _Rows] | None = None  # ahead: a call sent, its record not started
        self._job: tuple[Future[None], int | None] | None = None  # ahead: the worker's job, the call it records
        self._next: tuple[Intent, float] | None = None  # ahead: the next call's intent (being) written, since
        self._number = 0  # the call being sent

    def _open(self, intent: Intent) -> None:
        self._ledger.open_intent(self._state_key, intent, renewed(self._lease, self._clock(), self._ttl))

    def _record(self, call_id: str, rows: _Rows, upcoming: Intent | None = None) -> None:
        delivered, rejects, doubts, new = rows
        self._ledger.close_intent(
            self._state_key,
            call_id,
            delivered=delivered,
            rejects=rejects,
            in_doubt=doubts,
            delivered_new=new,
            open_next=None if upcoming is None else (upcoming, renewed(self._lease, self._clock(), self._ttl)),
        )

    def _record_then_open(self, sent: tuple[Intent, _Rows] | None, upcoming: Intent | None) -> None:
        if sent is None:
            if upcoming is not None:
                self._open(upcoming)
            return
        try:
            self._record(sent[0].call_id, sent[1], upcoming)
        except LeaseLostError:
            self._record(sent[0].call_id, sent[1])  # what was sent is recorded all the same: no lease needed
            raise

    def opened(
        self,
        batch: list[Item],
        intent_for: Callable[[list[Item]], Intent],
        report: PushReport,
        number: int,
        total: int,
    ) -> Intent:
        """Call ``number``'s intent, written: now, or (ahead) by the worker during the previous call."""
        self._number = number
        if self._next is None:
            intent = intent_for(batch)
            self._open(intent)
            return intent
        intent, since = self._next
        try:
            self._wait(report, total)  # a record that failed stops the push: this call is not sent
            # A lease held by a database session (PostgreSQL's advisory lock) is gone the moment that session
            # drops, whatever its expiry says: it is checked before every call, as open_intent checked it.
            if self._ledger.session_bound_leases or self._clock() - since > self._ttl / 4:
                self._ledger.renew_lease(renewed(self._lease, self._clock(), self._ttl))
        except BaseException:
            self._drop_next()
            raise
        self._next = None
        return intent

    def beside_send(self, upcoming: list[Item] | None, intent_for: Callable[[list[Item]], Intent]) -> None:
        """Call ``self._number`` goes on the wire: start the previous call's record and the intent of
        ``upcoming`` (the next call's batch) beside it (ahead only)."""
        if self._pool is None:
            return
        sent, self._sent = self._sent, None
        intent = intent_for(upcoming) if upcoming is not None else None
        if sent is not None or intent is not None:
            job = self._pool.submit(self._record_then_open, sent, intent)
            self._job = (job, self._number - 1 if sent is not None else None)
        self._next = None if intent is None else (intent, self._clock())

    def sent(self, intent: Intent, rows: _Rows) -> None:
        """The outcome of the call just sent: recorded now, or (ahead) beside the next call."""
        if self._pool is None:
            self._record(intent.call_id, rows)
        else:
            self._sent = (intent, rows)

    def _wait(self, report: PushReport, total: int) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        future, recorded = job
        try:
            future.result()
        except LeaseLostError:
            raise  # the next call's intent was refused; the record went through on its own
        except BaseException:
            if recorded is not None:
                report.stopped = f"recording call {recorded} of {total} failed; its intent stays for the next run"
            raise

    def finish(self, report: PushReport, number: int, total: int) -> None:
        """The push ends after call ``number``: everything sent is recorded, and an intent written ahead
        for a call that will not be sent is deleted (nothing of it reached the vendor)."""
        try:
            self._wait(report, total)
        except LeaseLostError:
            pass  # only the next call's intent was refused: nothing more is sent anyway
        except BaseException:
            self._drop_next()
            raise
        self._record_sent(report, number, total)
        self._drop_next()

    def _record_sent(self, report: PushReport | None = None, number: int = 0, total: int = 0) -> None:
        """Record the call sent last, if its record has not started; its failure names it in ``report``."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        try:
            self._record(sent[0].call_id, sent[1])
        except BaseException:
            if report is not None:
                report.stopped = f"recording call {number} of {total} failed; its intent stays for the next run"
            raise

    def _drop_next(self) -> None:
        upcoming, self._next = self._next, None
        if upcoming is not None:
            # The call was never sent: its intent (if the worker wrote it) goes. If the warehouse cannot,
            # the next run's recovery finds it and sends its records again, which an idempotent sink allows.
            with suppress(BaseException):
                self._record(upcoming[0].call_id, ([], [], [], []))

    def close(self) -> None:
        """The push is over. If it ended early (a failed record, an error, a cancelled run), what was sent
        is still recorded where the warehouse allows, and the intent written ahead goes."""
        if self._pool is None:
            return
        if self._job is not None:
            # An exception left a job running: let it end (a record either commits or leaves its intent).
            with suppress(BaseException):
                self._job[0].result()
            self._job = None
        with suppress(Exception):  # if it fails too, the intent stays for the next run
            self._record_sent()
        self._drop_next()
        self._pool.shutdown(wait=True)


def _outcome_rows(
    intent: Intent, batch: list[Item], result: CallResult, sink: SinkSpec, report: PushReport, *, planned: bool
) -> _Rows:
    """One call's outcomes as the rows ``close_intent`` records, counted into ``report``."""
    by_index = {i.index: i for i in batch}
    delivered: list[Any] = []
    new: list[Any] = []
    rejects: list[Any] = []
    doubts: list[InDoubt] = []
    for outcome in result.outcomes:
        item = by_index[outcome.index]
        if outcome.status == "sent":
            (new if planned and item.action == "create" else delivered).append((item.key, item.hash, outcome.response))
            if item.action == "update":
                report.updated += 1
            else:
                report.created += 1
        elif outcome.status == "rejected":
            rejects.append((item.key, outcome.reason or "rejected", item.record))
            report.rejected += 1
            if len(report.rejects) < SHOWN:
                report.rejects.append((item.key, outcome.reason or "rejected"))
        elif not sink.idempotent:
            doubts.append(
                InDoubt(
                    item.key, item.hash, item.record, intent.call_id, intent.run_id, outcome.reason or "outcome unknown"
                )
            )
            report.in_doubt += 1
            if len(report.in_doubt_keys) < SHOWN:
                report.in_doubt_keys.append(item.key)
    report.write_calls += result.calls
    report.retries += result.retries
    return delivered, rejects, doubts, new


__all__ = [
    "PushReport",
    "hold_lease",
    "push",
    "read_back_settler",
    "reads_back",
    "recover_intents",
    "resend_in_doubt",
    "shows",
]
