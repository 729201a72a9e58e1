"""Conformance suite, parametrized over every stream of every connector (as meltano's tap tests are).

A new connector spec with a sandbox gets all of these for free: read every page; two sequential
incremental reads where the second starts where the first ended and repeats nothing; a future window
yields nothing; a full refresh twice gives identical records; every record fits the stream's schema.
Child streams (``parent:``) run the same tests: their truth is the sandbox's children of every parent,
each carrying its parent's key (``sandbox.children``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from integrations_pipeline.engine.errors import EndpointUnsupportedError
from integrations_pipeline.engine.read.extract import Window, read_pages
from integrations_pipeline.engine.read.load import load_stream

from .harness import (
    ALL_TIME_END,
    FULL_REFRESH,
    INCREMENTAL,
    SPECS,
    STREAMS,
    destination_for,
    sort_key,
    stream_harness,
)


def ids(params):
    return [f"{c}/{s}" for c, s in params]


def full_window(spec, stream):
    inc = spec.streams[stream].incremental
    if inc is None:
        return None
    return Window(datetime.fromisoformat(inc.start_date).replace(tzinfo=UTC), ALL_TIME_END)


def read_all(h, stream, connection, window):
    with h.client() as client:
        return list(read_pages(client, stream, window=window, connection=connection))


def test_every_connector_with_streams_is_covered():
    assert STREAMS, "no streams discovered"
    assert {c for c, _ in STREAMS} == {name for name, spec in SPECS.items() if spec.streams}


@pytest.mark.parametrize(("connector", "stream"), STREAMS, ids=ids(STREAMS))
def test_reads_every_page(connector, stream):
    h = stream_harness(connector, stream)
    s = h.spec.streams[stream]
    page_size = getattr(s.pagination, "page_size", None)
    for connection in h.connections():
        if h.unsupported(connection, stream):
            with pytest.raises(EndpointUnsupportedError):
                read_all(h, stream, connection, full_window(h.spec, stream))
            continue
        pages = read_all(h, stream, connection, full_window(h.spec, stream))
        records = [r for p in pages for r in p.records]
        truth = h.truth(stream, connection)
        assert truth, "the sandbox holds no records for this stream"
        key = sort_key(s.primary_key)
        assert sorted(records, key=key) == sorted(truth, key=key)
        if page_size:
            assert all(len(p.records) <= page_size for p in pages)
            # Exactly the pages needed, allowing one trailing empty page where a vendor can't tell; a child
            # stream pages once per parent (an empty parent is one empty page).
            if s.parent is None:
                needed, spare = math.ceil(len(truth) / page_size), 1
            else:
                groups = h.truth_by_parent(stream, connection)
                needed, spare = sum(max(1, math.ceil(len(g) / page_size)) for g in groups.values()), len(groups)
            assert needed <= len(pages) <= needed + spare
        if s.parent is not None:
            # Every parent was read once, in order, and its children carry its key.
            assert list(dict.fromkeys(p.parent for p in pages)) == list(h.truth_by_parent(stream, connection))
            assert all(r[s.parent.key_column] == p.parent for p in pages for r in p.records)


@pytest.mark.parametrize(("connector", "stream"), INCREMENTAL, ids=ids(INCREMENTAL))
def test_second_incremental_read_starts_where_first_ended(connector, stream):
    h = stream_harness(connector, stream)
    dest = destination_for(h, stream)
    connections = h.connections()
    with h.client() as client:
        first = load_stream(client, stream, dest, connections, now=ALL_TIME_END)
    supported = [c for c in connections if not h.unsupported(c, stream)]
    assert first.records == sum(len(h.truth(stream, c)) for c in supported)

    target = supported[0]
    cursor = h.spec.streams[stream].incremental.cursor_field
    last_cursor = max(r[cursor] for r in h.truth(stream, target))
    boundary = datetime.fromisoformat(last_cursor.replace("Z", "+00:00"))
    changed = h.sandbox.touch(stream, 3, boundary + timedelta(minutes=30), target.id)
    # A record landing exactly on the previous cursor must not be lost, and the records already
    # delivered at that cursor must not be repeated.
    changed += h.sandbox.add(stream, 2, boundary, target.id)
    with h.client() as client:
        second = load_stream(client, stream, dest, connections, now=ALL_TIME_END)
    by_conn = {o.connection_id: o for o in second.outcomes}
    assert len(set(changed)) == 5
    assert by_conn[target.id].records == 5
    assert all(o.records == 0 for o in second.outcomes if o.connection_id != target.id)
    truth = [r for c in supported for r in h.truth(stream, c)]
    assert dest.records() == sorted(truth, key=sort_key(dest.pk))


@pytest.mark.parametrize(("connector", "stream"), INCREMENTAL, ids=ids(INCREMENTAL))
def test_future_window_yields_nothing(connector, stream):
    h = stream_harness(connector, stream)
    window = Window(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    for connection in h.connections():
        if h.unsupported(connection, stream):
            continue
        pages = read_all(h, stream, connection, window)
        assert [r for p in pages for r in p.records] == []


@pytest.mark.parametrize(("connector", "stream"), STREAMS, ids=ids(STREAMS))
def test_full_refresh_twice_is_identical(connector, stream):
    h = stream_harness(connector, stream)
    for connection in h.connections():
        if h.unsupported(connection, stream):
            continue
        window = full_window(h.spec, stream)
        first = [r for p in read_all(h, stream, connection, window) for r in p.records]
        second = [r for p in read_all(h, stream, connection, window) for r in p.records]
        assert first and first == second


@pytest.mark.parametrize(("connector", "stream"), FULL_REFRESH, ids=ids(FULL_REFRESH))
def test_full_refresh_stream_sees_changes(connector, stream):
    h = stream_harness(connector, stream)
    dest = destination_for(h, stream)
    with h.client() as client:
        load_stream(client, stream, dest, h.connections())
        h.sandbox.touch(stream, 1, ALL_TIME_END - timedelta(hours=1))
        load_stream(client, stream, dest, h.connections())
    assert dest.records() == h.truth(stream, h.connections()[0])


@pytest.mark.parametrize(("connector", "stream"), STREAMS, ids=ids(STREAMS))
def test_every_record_fits_the_schema(connector, stream):
    h = stream_harness(connector, stream)
    validator = Draft202012Validator(h.spec.streams[stream].json_schema, format_checker=FormatChecker())
    seen = 0
    for connection in h.connections():
        if h.unsupported(connection, stream):
            continue
        for page in read_all(h, stream, connection, full_window(h.spec, stream)):
            for record in page.records:
                errors = sorted(validator.iter_errors(record), key=str)
                assert not errors, f"{record.get('id')}: {errors[0].message} at {list(errors[0].path)}"
                seen += 1
    assert seen > 0
