"""When a day runs by itself: the schedule's day and the change sensor's choices."""

from datetime import UTC, date, datetime, timedelta

import pytest

from rag_sft.core.automation import (
    ChangeCursor,
    DayRequest,
    LatestRun,
    changed_days_to_request,
    day_closed_by,
    is_closed,
    schedule_cron,
)

D18, D19, D20 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)
HOUR = timedelta(hours=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_day_closes_at_midnight_utc_plus_the_lag():
    assert not is_closed(D19, at("2026-11-20T00:59:59"), HOUR)
    assert is_closed(D19, at("2026-11-20T01:00:00"), HOUR)
    assert is_closed(D19, at("2026-11-20T00:00:00"), timedelta(0))


def test_the_schedule_ticks_after_the_lag_and_takes_the_day_that_closed():
    assert schedule_cron(HOUR) == "0 1 * * *"
    assert schedule_cron(timedelta(minutes=90)) == "30 1 * * *"
    assert schedule_cron(timedelta(0)) == "0 0 * * *"
    assert day_closed_by(at("2026-11-20T01:00:00"), HOUR) == D19
    assert day_closed_by(at("2026-11-20T00:00:00"), timedelta(0)) == D19
    with pytest.raises(ValueError, match="under 24 hours"):
        schedule_cron(timedelta(hours=24))


def test_a_changed_closed_day_runs_again_and_an_unchanged_one_does_not():
    now = at("2026-11-21T12:00:00")
    requests, later = changed_days_to_request(
        {D18: "new", D19: "same"}, {D18: LatestRun("old"), D19: LatestRun("same")}, now, HOUR
    )
    assert requests == [DayRequest(D18, "new")] and later == []
    assert requests[0].run_key == "2026-11-18:new"


def test_an_open_day_waits_and_a_never_run_day_waits_for_the_schedule_first():
    # 01:05 on the 20th: the 19th closed 5 minutes ago, its schedule tick may still be coming.
    requests, later = changed_days_to_request({D19: "f", D20: "g"}, {D19: None, D20: None}, at("2026-11-20T01:05:00"), HOUR)
    assert requests == [] and later == [D19, D20]
    # later that day the schedule has had its turn: the sensor catches the day up.
    requests, later = changed_days_to_request({D19: "f"}, {D19: None}, at("2026-11-20T02:00:00"), HOUR)
    assert requests == [DayRequest(D19, "f")] and later == []
    # history: closed long ago, never run
    requests, _ = changed_days_to_request({D18: "h"}, {D18: None}, at("2026-11-25T00:00:00"), HOUR)
    assert requests == [DayRequest(D18, "h")]


def test_the_cursor_round_trips_and_stays_small():
    cursor = ChangeCursor(after=1234, waiting=["2026-11-20"])
    assert ChangeCursor.from_json(cursor.to_json()) == cursor
    assert ChangeCursor.from_json(None) == ChangeCursor()
    assert len(cursor.to_json()) < 100
