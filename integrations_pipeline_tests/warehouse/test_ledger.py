"""The delivery ledger on both backends: leases, intents, records in doubt, and their transactions.

These are the warehouse's half of ``engine.write.ledger.DeliveryLedger``; ``engine/write/test_push.py``
drives them through ``push`` with crashes, races and failing vendors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from integrations_pipeline.engine.errors import LeaseLostError
from integrations_pipeline.engine.write.ledger import (
    InDoubt,
    Intent,
    Lease,
    holder_alive,
    may_take_from,
    new_lease,
    renewed,
)

SYNC = "salesmanago/orders_to_events"
NOW = 1_800_000_000.0


def intent(call_id: str, *keys: str) -> Intent:
    return Intent(call_id, "run-1", NOW, tuple((k, f"h-{k}", {"externalId": k, "n": 1}) for k in keys))


def doubt(key: str, call_id: str = "c1") -> InDoubt:
    return InDoubt(key, f"h-{key}", {"externalId": key}, call_id, "run-1", "HTTP 500 after sending")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- leases ------------------------------------------------------------------------------------------


def test_a_lease_is_held_until_released(warehouse):
    mine = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(mine, may_take_from(NOW)) is None
    theirs = new_lease(SYNC, "run-2", NOW, 60)
    held = warehouse.take_lease(theirs, may_take_from(NOW))
    assert held is not None and (held.token, held.run_id, held.pid) == (mine.token, "run-1", os.getpid())
    assert "run run-1 (pid" in held.describe()
    # The holder itself may take it again (a renewal), and a release frees it.
    assert warehouse.take_lease(renewed(mine, NOW + 1, 60), may_take_from(NOW + 1)) is None
    warehouse.release_lease(SYNC, mine.token)
    assert warehouse.take_lease(theirs, may_take_from(NOW)) is None


def test_an_expired_lease_is_taken_over_unless_a_live_session_holds_it(warehouse):
    mine = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(mine, may_take_from(NOW)) is None
    theirs = new_lease(SYNC, "run-2", NOW + 61, 60)
    held = warehouse.take_lease(theirs, may_take_from(NOW + 61))
    if warehouse.backend == "postgres":
        # The holder's session still holds the advisory lock: the server, not a clock, says it is alive.
        assert held is not None and held.token == mine.token
    else:
        assert held is None


def test_the_lease_of_a_dead_process_is_taken_at_once(duckdb_url):
    # A holder killed with -9 on this host: its lease is free long before it expires. (PostgreSQL leases
    # are also session advisory locks, which the server drops with the session: test_push kills one.)
    from integrations_pipeline.warehouse import connect_warehouse

    gone = Lease(SYNC, "t-dead", "run-killed", socket.gethostname(), dead_pid(), None, NOW, NOW + 3600)
    assert not holder_alive(gone)
    with connect_warehouse(duckdb_url) as warehouse:
        assert warehouse.take_lease(gone, lambda held: False) is None
        mine = new_lease(SYNC, "run-1", NOW, 60)
        assert warehouse.take_lease(mine, may_take_from(NOW)) is None


def test_a_lease_on_another_host_is_alive_until_it_expires():
    remote = Lease(SYNC, "t", "run-x", "some-other-host", 1, None, NOW, NOW + 60)
    assert holder_alive(remote)
    assert not may_take_from(NOW + 30)(remote) and may_take_from(NOW + 60)(remote)


# -- intents ----------------------------------------------------------------------------------------


def _delivered_rows(warehouse, sink: str) -> list[tuple[str, str]]:
    """Every row of the delivered table for ``sink``, duplicates included (``read_delivered`` is a dict)."""
    from integrations_pipeline.warehouse.delivery import DELIVERED

    p = "?" if warehouse.backend == "duckdb" else "%s"
    with warehouse._connection() as conn:
        rows = conn.execute(f"SELECT record_key, hash FROM {DELIVERED} WHERE sink = {p} ORDER BY 1", [sink]).fetchall()
    return [tuple(r) for r in rows]


def test_keys_recorded_as_new_are_upserted_once_the_intent_was_settled_by_another_push(warehouse):
    """``delivered_new`` skips the look for old rows only while the call's intent stands. A push that lost
    its lease mid-call, while another push settled its intent and delivered the same keys, still records
    them as one row per key."""
    lease = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(lease, may_take_from(NOW)) is None
    warehouse.open_intent(SYNC, intent("c1", "o1", "o2"), renewed(lease, NOW, 60))
    warehouse.close_intent(SYNC, "c1", delivered_new=[("o1", "h-o1", None), ("o2", "h-o2", None)])
    assert _delivered_rows(warehouse, SYNC) == [("o1", "h-o1"), ("o2", "h-o2")]

    warehouse.open_intent(SYNC, intent("c2", "o3", "o4"), renewed(lease, NOW, 60))
    # Another push (this run's lease expired) recovers c2 (closing it) and delivers o3 itself.
    warehouse.close_intent(SYNC, "c2")
    warehouse.record_delivery(SYNC, [("o3", "h-o3-theirs", None)])
    # This run's answer for c2 arrives late: o3 and o4 were new to its plan, but the intent is gone.
    warehouse.close_intent(SYNC, "c2", delivered_new=[("o3", "h-o3", None), ("o4", "h-o4", None)])
    assert _delivered_rows(warehouse, SYNC) == [("o1", "h-o1"), ("o2", "h-o2"), ("o3", "h-o3"), ("o4", "h-o4")]


def test_an_intent_is_written_with_the_lease_and_closed_with_the_outcome(warehouse):
    lease = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(lease, may_take_from(NOW)) is None
    warehouse.open_intent(SYNC, intent("c1", "o1", "o2", "o3"), renewed(lease, NOW, 60))
    (written,) = warehouse.read_intents(SYNC)
    assert written.call_id == "c1" and [k for k, _, _ in written.items] == ["o1", "o2", "o3"]
    assert written.items[0] == ("o1", "h-o1", {"externalId": "o1", "n": 1})
    warehouse.close_intent(
        SYNC, "c1",
        delivered=[("o1", "h-o1", {"event_id": "e1"})],
        rejects=[("o2", "email: not valid", {"externalId": "o2"})],
        in_doubt=[doubt("o3")],
    )  # fmt: skip
    assert warehouse.read_intents(SYNC) == []
    assert warehouse.read_delivered(SYNC) == {"o1": "h-o1"}
    assert [r["record_key"] for r in warehouse.read_rejects(SYNC)] == ["o2"]
    (row,) = warehouse.read_in_doubt(SYNC)
    assert (row.key, row.hash, row.record, row.call_id, row.reason) == (
        "o3",
        "h-o3",
        {"externalId": "o3"},
        "c1",
        "HTTP 500 after sending",
    )
    assert row.since is not None


def test_an_intent_without_the_lease_writes_nothing(warehouse):
    mine = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(mine, may_take_from(NOW)) is None
    theirs = new_lease(SYNC, "run-2", NOW + 61, 60)
    assert warehouse.take_lease(theirs, may_take_from(NOW + 61)) is None or warehouse.backend == "postgres"
    if warehouse.backend == "postgres":
        # One session holds the advisory lock; a lease lost with its session is covered in test_push.
        warehouse.release_lease(SYNC, mine.token)
        lost = new_lease(SYNC, "run-3", NOW, 60)
        with pytest.raises(LeaseLostError, match="session holding this run's lease was lost"):
            warehouse.open_intent(SYNC, intent("c1", "o1"), lost)
    else:
        with pytest.raises(LeaseLostError, match=r"lease is gone \(held now by run run-2"):
            warehouse.open_intent(SYNC, intent("c1", "o1"), renewed(mine, NOW + 62, 60))
    assert warehouse.read_intents(SYNC) == []


def test_a_record_and_the_next_intent_commit_together_or_not_at_all(warehouse):
    lease = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(lease, may_take_from(NOW)) is None
    warehouse.open_intent(SYNC, intent("c1", "o1"), renewed(lease, NOW, 60))
    warehouse.close_intent(
        SYNC, "c1", delivered_new=[("o1", "h-o1", None)], open_next=(intent("c2", "o2"), renewed(lease, NOW + 1, 60))
    )
    assert warehouse.read_delivered(SYNC) == {"o1": "h-o1"}
    assert [i.call_id for i in warehouse.read_intents(SYNC)] == ["c2"]
    # The lease lapses and another run takes it: the next intent is refused, and so is the record with it
    # (the caller records on its own what was sent).
    if warehouse.backend == "postgres":
        warehouse.release_lease(SYNC, lease.token)  # its session lock: the way PostgreSQL loses a lease
    else:
        assert warehouse.take_lease(new_lease(SYNC, "run-2", NOW + 62, 60), may_take_from(NOW + 62)) is None
    with pytest.raises(LeaseLostError):
        warehouse.close_intent(
            SYNC,
            "c2",
            delivered_new=[("o2", "h-o2", None)],
            open_next=(intent("c3", "o3"), renewed(lease, NOW + 63, 60)),
        )
    assert warehouse.read_delivered(SYNC) == {"o1": "h-o1"}
    assert [i.call_id for i in warehouse.read_intents(SYNC)] == ["c2"]


def test_a_lease_is_renewed_only_by_its_holder(warehouse):
    mine = new_lease(SYNC, "run-1", NOW, 60)
    assert warehouse.take_lease(mine, may_take_from(NOW)) is None
    warehouse.renew_lease(renewed(mine, NOW + 50, 60))
    # Renewed to NOW + 110: another run may not take it at NOW + 61, as it could have without the renewal.
    held = warehouse.take_lease(new_lease(SYNC, "run-2", NOW + 61, 60), may_take_from(NOW + 61))
    assert held is not None and held.token == mine.token and held.expires_at == NOW + 110
    if warehouse.backend != "postgres":  # PostgreSQL's session lock keeps a lease its holder's session holds
        assert warehouse.take_lease(new_lease(SYNC, "run-2", NOW + 111, 60), may_take_from(NOW + 111)) is None
        with pytest.raises(LeaseLostError, match=r"lease is gone \(held now by run run-2"):
            warehouse.renew_lease(renewed(mine, NOW + 112, 60))


def test_records_delivered_or_rejected_leave_the_in_doubt_table(warehouse):
    lease = new_lease(SYNC, "run-1", NOW, 60)
    warehouse.take_lease(lease, may_take_from(NOW))
    warehouse.open_intent(SYNC, intent("c1", "o1", "o2", "o3"), lease)
    warehouse.close_intent(SYNC, "c1", in_doubt=[doubt("o1"), doubt("o2"), doubt("o3")])
    # A resend: o1 delivered, o2 refused, o3 in doubt again (with the new call's reason).
    warehouse.open_intent(SYNC, intent("c2", "o1", "o2", "o3"), lease)
    again = InDoubt("o3", "h-o3", {"externalId": "o3"}, "c2", "run-1", "timed out")
    warehouse.close_intent(SYNC, "c2", delivered=[("o1", "h-o1", None)], rejects=[("o2", "bad", {})], in_doubt=[again])
    assert [(r.key, r.call_id, r.reason) for r in warehouse.read_in_doubt(SYNC)] == [("o3", "c2", "timed out")]
    assert warehouse.read_delivered(SYNC) == {"o1": "h-o1"}


def test_a_key_already_delivered_is_never_put_in_doubt(warehouse):
    warehouse.record_delivery(SYNC, [("o1", "h-o1", None)])
    warehouse.close_intent(SYNC, "c-late", in_doubt=[doubt("o1"), doubt("o2")])
    assert [r.key for r in warehouse.read_in_doubt(SYNC)] == ["o2"]


def test_resolving_marks_delivered_or_just_releases(warehouse):
    warehouse.close_intent(SYNC, "c1", in_doubt=[doubt("o1"), doubt("o2"), doubt("o3")])
    taken = warehouse.resolve_in_doubt(SYNC, ["o1"], mark_delivered=True)
    assert [r.key for r in taken] == ["o1"]
    assert warehouse.read_delivered(SYNC) == {"o1": "h-o1"}
    assert [r.key for r in warehouse.resolve_in_doubt(SYNC, None, mark_delivered=False)] == ["o2", "o3"]
    assert warehouse.read_in_doubt(SYNC) == [] and warehouse.read_delivered(SYNC) == {"o1": "h-o1"}
    assert warehouse.resolve_in_doubt(SYNC, ["nope"], mark_delivered=True) == []


def test_ledgers_of_two_syncs_are_apart(warehouse):
    warehouse.close_intent("a/sync", "c1", in_doubt=[doubt("k")])
    assert warehouse.read_in_doubt("b/sync") == [] and warehouse.read_intents("b/sync") == []
    assert [r.key for r in warehouse.read_in_doubt("a/sync")] == ["k"]
