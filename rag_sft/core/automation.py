"""When a day is materialized by itself: the daily schedule's day and the change sensor's choice.

A day is *closed* once its UTC midnight plus a lag for stragglers has passed. The schedule
materializes the day that has just closed; the change sensor re-materializes a closed day whose
content (the source's fingerprint of it) differs from the one its latest run was launched for,
and catches up closed days that never ran (history found when the daemon starts, ticks the
schedule missed) once the schedule has had its turn (`grace`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

DEFAULT_LAG = timedelta(hours=1)
SCHEDULE_GRACE = timedelta(minutes=15)


def closes_at(day: date, lag: timedelta) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + lag


def is_closed(day: date, now: datetime, lag: timedelta) -> bool:
    return now >= closes_at(day, lag)


def day_closed_by(tick: datetime, lag: timedelta) -> date:
    """The day the schedule's tick at `tick` (midnight + lag) materializes: the one that closed."""
    return (tick - lag).date() - timedelta(days=1)


def schedule_cron(lag: timedelta) -> str:
    """Daily at midnight UTC plus the lag (under a day)."""
    if not timedelta(0) <= lag < timedelta(days=1):
        raise ValueError(f"the daily lag must be at least 0 and under 24 hours, got {lag}")
    minutes = int(lag.total_seconds()) // 60
    return f"{minutes % 60} {minutes // 60} * * *"


@dataclass(frozen=True)
class LatestRun:
    """The latest run of a day's partition: the fingerprint it was launched for (None: unknown)."""

    fingerprint: str | None


@dataclass(frozen=True)
class DayRequest:
    day: date
    fingerprint: str

    @property
    def run_key(self) -> str:
        return f"{self.day.isoformat()}:{self.fingerprint[:16]}"


@dataclass
class ChangeCursor:
    """The change sensor's cursor: the source's change watermark and the changed days still open."""

    after: int | str | None = None
    waiting: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"after": self.after, "waiting": self.waiting})

    @classmethod
    def from_json(cls, text: str | None) -> ChangeCursor:
        return cls(**json.loads(text)) if text else cls()


def changed_days_to_request(
    candidates: Mapping[date, str],
    latest_runs: Mapping[date, LatestRun | None],
    now: datetime,
    lag: timedelta,
    grace: timedelta = SCHEDULE_GRACE,
) -> tuple[list[DayRequest], list[date]]:
    """(the days to materialize now, the days to look at again later).

    `candidates`: each day whose content changed (or that is still waiting), with its current
    fingerprint; `latest_runs`: the latest run of each candidate's partition, or None.
    """
    requests: list[DayRequest] = []
    later: list[date] = []
    for day in sorted(candidates):
        fingerprint = candidates[day]
        if not is_closed(day, now, lag):
            later.append(day)  # the day is still filling up; the schedule takes it when it closes
            continue
        latest = latest_runs.get(day)
        if latest is None:
            if now < closes_at(day, lag) + grace:
                later.append(day)  # the schedule's turn first
            else:
                requests.append(DayRequest(day, fingerprint))
        elif latest.fingerprint != fingerprint:
            requests.append(DayRequest(day, fingerprint))
    return requests, later
