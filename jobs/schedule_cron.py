"""Cron expressions and IANA timezones: checking them and computing fire times (cronsim).

Only the classic five fields (minute hour day-of-month month day-of-week) are accepted: the
finest schedule fires once a minute, and cronsim applies Debian cron's DST rules only to
five-field expressions. Those rules, for a schedule at a fixed hour (`0 2 * * *`) in a zone
with DST:

- **spring forward** (a wall time that does not exist, Europe/Berlin 02:00-03:00 on the last
  Sunday of March): the fire happens at the first valid minute after the gap, 03:00 CEST.
- **fall back** (a wall time that happens twice, 02:00-03:00 on the last Sunday of October):
  it fires once, at the first occurrence (CEST, fold=0).

Expressions with `*` in the minute or hour field run "normally", on real time: `*/30 * * * *`
fires in both occurrences of a repeated hour and has no fire inside a gap. Fire times are
computed on the schedule's wall clock and returned in UTC, which is how they are stored and
compared.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

MAX_CRON_LENGTH = 100
MAX_TIMEZONE_LENGTH = 64


class CronError(ValueError):
    """A cron expression or timezone that cannot drive a schedule."""


def check_cron(expr: str) -> str:
    """`expr` with its whitespace normalised; CronError saying what is wrong otherwise."""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(
            f"{expr!r} has {len(fields)} fields; a cron expression has five: "
            "minute hour day-of-month month day-of-week (e.g. '0 2 * * *')"
        )
    normal = " ".join(fields)
    try:
        first = next(CronSim(normal, datetime(2000, 1, 1, tzinfo=UTC)), None)
    except CronSimError as exc:
        raise CronError(f"{expr!r} is not a cron expression ({exc})") from None
    if first is None:
        raise CronError(f"{expr!r} never fires")
    return normal


def check_timezone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; CronError for anything else (a path, an abbreviation)."""
    if name not in _known_zones():
        raise CronError(f"{name!r} is not an IANA timezone name such as 'Europe/Berlin' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"{name!r} is not an IANA timezone this server knows") from None


@functools.cache
def _known_zones() -> frozenset[str]:
    """The zone names on this machine, read once (ZoneInfo alone would open any path)."""
    return frozenset(available_timezones()) | {"UTC"}


def fire_times_after(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after `after`, in UTC, in order (endless for valid input)."""
    start = after.astimezone(tz).replace(microsecond=0)
    for local in CronSim(expr, start):
        fire = local.astimezone(UTC)
        if fire > after:
            yield fire


def next_fire_times(expr: str, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times after `after` (UTC)."""
    times = fire_times_after(expr, tz, after)
    return [fire for _, fire in zip(range(count), times, strict=False)]


def latest_fire_at_or_before(expr: str, tz: ZoneInfo, when: datetime) -> datetime | None:
    """The last fire time at or before `when` (UTC), or None if there is none in 50 years."""
    # Reverse iteration yields times strictly before its start: start one second later.
    start = (when + timedelta(seconds=1)).astimezone(tz).replace(microsecond=0)
    try:
        local = next(CronSim(expr, start, reverse=True))
    except StopIteration:
        return None
    return local.astimezone(UTC)
