"""One reverse-ETL push: diff the records against what was delivered, send only the changes, record it all.

``push`` is the whole write side of a sync, with no Dagster in it (the sink IO manager and the
benchmarks both call it):

1. read what this sync delivered before (``DeliveryLog.read_delivered(state_key)``: key → hash);
2. ``engine.diff.diff`` splits the records into created / updated / unchanged / deleted (keys delivered
   before that the source no longer has: reported and planned, never acted on — deleting in the target
   is a sync of its own into a delete sink; events, being history, are never "deleted");
3. **dry run**: validate what would be sent against the sink's rules and write the plan (``create``,
   ``update``, ``delete``, ``reject`` with its reason) to ``DeliveryLog.record_plan``; no client is
   built, so no call can reach the vendor;
4. otherwise ``SinkWriter`` sends the changes in ⌈n / batch⌉ calls, and every outcome is recorded:
   deliveries (key, hash, the vendor's kept answer fields) and rejects (key, reason, record). When the
   write fails part-way (exhausted retries, 401/403), what the completed calls delivered is recorded
   before the error propagates, so a re-run sends only the rest and doubles nothing.

The delivered state is keyed by ``state_key``, the sync (its asset), not by the endpoint: two syncs
into one sink do not see each other's keys as deleted, and routing a sync through a proxy (SALESmanago
via Datatalks) keeps its history, so events already sent are not sent again by the new route.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..client import VendorClient
from .diff import Diff, diff, key_text, outcome_rows
from .sinks import Record, SinkWriter, WriteReport, record_key, validate_record
from ..spec import ConnectorSpec

#: How many rejects a report keeps for logs (all of them go to the rejects table).
REJECTS_SHOWN = 20


class DeliveryLog(Protocol):
    """Where a push keeps its bookkeeping: the warehouse implements this (``warehouse/delivery.py``)."""

    def read_delivered(self, sink: str) -> dict[str, str]: ...
    def record_delivery(self, sink: str, rows: Sequence[tuple[str, str, Any]]) -> int: ...
    def record_rejects(self, sink: str, rows: Sequence[tuple[Any, str, Any]]) -> int: ...
    def record_plan(self, sink: str, run_id: str, rows: Sequence[tuple[str, Any, Any, Any]]) -> int: ...


@dataclass
class PushReport:
    """What one push did (or, in a dry run, would do). ``rejects`` holds the first few (key, reason)."""

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
    write_calls: int = 0
    retries: int = 0
    seconds: float = 0.0
    rejects: list[tuple[Any, str]] = field(default_factory=list)


def plan_rows(sink_spec: Any, plan: Diff) -> list[tuple[str, Any, Any, Any]]:
    """A dry run's plan rows ``(action, key, reason, record)``."""
    rows: list[tuple[str, Any, Any, Any]] = []
    created_ids = {id(r) for r in plan.created}
    for record in plan.to_send:
        reasons = validate_record(sink_spec, record)
        key = key_text(record_key(sink_spec, record))
        if reasons:
            rows.append(("reject", key, "; ".join(reasons), record))
        else:
            rows.append(("create" if id(record) in created_ids or key is None else "update", key, None, record))
    rows.extend(("delete", key, None, None) for key in _deleted(sink_spec, plan))
    return rows


def _deleted(sink_spec: Any, plan: Diff) -> list[str]:
    # An event (append) that no longer appears is history, not a record that went away: a deal's
    # earlier stage event is not "deleted" when the deal moves on.
    return [] if sink_spec.mode == "append" else plan.deleted


def push(
    records: Sequence[Record],
    *,
    spec: ConnectorSpec,
    sink_name: str,
    log: DeliveryLog,
    state_key: str,
    client: Callable[[], VendorClient],
    dry_run: bool = False,
    run_id: str = "manual",
    transport: Any = None,
    environ: Mapping[str, str] | None = None,
    on_plan: Callable[[Diff], None] | None = None,
) -> PushReport:
    """Push ``records`` to ``spec``'s sink ``sink_name``; see the module docstring.

    ``client`` builds the connector's ``VendorClient``; it is called only when something must be sent
    (never in a dry run, never for a re-run with nothing changed).
    """
    started = time.perf_counter()
    sink = spec.sinks[sink_name]
    delivered = log.read_delivered(state_key)
    plan = diff(sink, records, delivered)
    if on_plan is not None:
        on_plan(plan)
    report = PushReport(state_key=state_key, sink=f"{spec.name}/{sink_name}", dry_run=dry_run,
                        considered=len(records), unchanged=len(plan.unchanged), deleted=len(_deleted(sink, plan)),
                        skipped_insert_once=len(plan.skipped_insert_once), superseded=plan.superseded)
    if dry_run:
        rows = plan_rows(sink, plan)
        actions = Counter(r[0] for r in rows)
        report.created, report.updated, report.rejected = actions["create"], actions["update"], actions["reject"]
        report.rejects = [(r[1], r[2]) for r in rows if r[0] == "reject"][:REJECTS_SHOWN]
        if rows:
            log.record_plan(state_key, run_id, rows)
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    written = WriteReport(sink_name)
    if plan.to_send:
        with client() as vendor, SinkWriter(vendor, spec, sink_name, transport=transport, environ=environ) as writer:
            try:
                written = writer.write(plan.to_send)
            except Exception as exc:
                # Keep what did arrive before the failure, so a re-run does not send it again.
                partial = getattr(exc, "partial_report", None)
                if partial is not None:
                    _record(log, state_key, plan, partial)
                raise
        _record(log, state_key, plan, written)
    sent_keys = [key_text(o.key) for o in written.sent]
    report.created = sum(1 for k in sent_keys if k not in delivered)
    report.updated = len(sent_keys) - report.created
    report.rejected = len(written.rejected)
    report.rejects = [(o.key, o.reason or "rejected") for o in written.rejected[:REJECTS_SHOWN]]
    report.write_calls = written.calls
    report.retries = written.retries
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _record(log: DeliveryLog, state_key: str, plan: Diff, report: WriteReport) -> None:
    sent, rejected = outcome_rows(plan, report)
    if sent:
        log.record_delivery(state_key, sent)
    if rejected:
        log.record_rejects(state_key, rejected)


__all__ = ["DeliveryLog", "PushReport", "plan_rows", "push"]
