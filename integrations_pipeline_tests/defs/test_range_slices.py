"""Which range runs are committed a day at a time: a year's backfill is, the main job's two months and a
single day are not (a day costs at least one request even when nothing happened that day)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from integrations_pipeline.defs.assets import RANGE_SLICE, range_slice
from integrations_pipeline.engine.read.extract import Window

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_year_is_sliced_by_day_and_short_ranges_are_one_window():
    assert range_slice(Window(START, START + timedelta(days=365))) == RANGE_SLICE == timedelta(days=1)
    assert range_slice(Window(START, START + timedelta(days=63))) is None
    assert range_slice(Window(START, START + timedelta(days=1))) is None
    assert range_slice(None) is None
