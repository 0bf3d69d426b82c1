"""Cron fire times (cronsim) across Europe/Berlin's DST changes, and the fire-time templates."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jobs.schedule_cron import (
    CronError,
    check_cron,
    check_timezone,
    latest_fire_at_or_before,
    next_fire_times,
)
from jobs.schedule_template import TemplateError, render_template

BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_daily_fire_in_the_spring_forward_gap_moves_to_the_first_valid_minute() -> None:
    """02:30 Berlin does not exist on 2026-03-29: that day fires at 03:00 CEST (01:00 UTC)."""
    times = next_fire_times("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 3)
    assert times == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_daily_fire_in_the_autumn_repeat_happens_once_at_the_first_occurrence() -> None:
    """02:30 Berlin happens twice on 2026-10-25: it fires once, at 02:30 CEST (00:30 UTC)."""
    times = next_fire_times("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 3)
    assert times == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_every_half_hour_fires_in_both_occurrences_of_the_repeated_hour() -> None:
    """A `*` hour runs on real time: 02:00 and 02:30 come twice on 2026-10-25, in UTC order."""
    times = next_fire_times("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 45), 5)
    assert times == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0),
                     utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 0)]  # fmt: skip
    local = [t.astimezone(BERLIN).strftime("%H:%M%z") for t in times]
    assert local == ["02:00+0200", "02:30+0200", "02:00+0100", "02:30+0100", "03:00+0100"]


def test_every_half_hour_has_no_fire_inside_the_spring_gap() -> None:
    """On 2026-03-29 Berlin goes from 01:30 CET straight to 03:00 CEST (02:xx never exists)."""
    times = next_fire_times("*/30 * * * *", BERLIN, utc(2026, 3, 29, 0, 15), 3)
    local = [t.astimezone(BERLIN).strftime("%H:%M%z") for t in times]
    assert local == ["01:30+0100", "03:00+0200", "03:30+0200"]


def test_latest_fire_at_or_before_counts_the_exact_instant() -> None:
    """A fire time equal to `when` is the latest; one second earlier it is the day before."""
    fire = utc(2026, 6, 1, 0, 0)  # 02:00 CEST
    assert latest_fire_at_or_before("0 2 * * *", BERLIN, fire) == fire
    before = latest_fire_at_or_before("0 2 * * *", BERLIN, utc(2026, 5, 31, 23, 59, 59))
    assert before == utc(2026, 5, 31, 0, 0)


@pytest.mark.parametrize(
    "expr", ["", "* * * *", "0 0 2 * * *", "61 * * * *", "0 2 * * MON#9", "0 0 30 2 *", "x y z"]
)
def test_bad_cron_expressions_are_refused_with_a_reason(expr: str) -> None:
    """Four or six fields, values out of range, nonsense, or never firing are all CronError."""
    with pytest.raises(CronError):
        check_cron(expr)


def test_cron_whitespace_is_normalised() -> None:
    """Extra spaces between fields do not make a different schedule."""
    assert check_cron("  0   2 * *  * ") == "0 2 * * *"


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "CEST", "", "europe/berlin"])
def test_unknown_timezones_are_refused(name: str) -> None:
    """Only IANA names this machine knows pass; paths and abbreviations do not."""
    with pytest.raises(CronError):
        check_timezone(name)


FIRE = utc(2026, 3, 29, 0, 0)  # 01:00 CET, the night of the spring-forward change


def render(value: object, fire: datetime = FIRE) -> object:
    return render_template(value, fire, BERLIN)


def test_fire_time_and_offsets_render_as_iso_8601_utc() -> None:
    """`{fire_time}` and minute/hour offsets are elapsed time, rendered in UTC with +00:00."""
    assert render("{fire_time}") == "2026-03-29T00:00:00+00:00"
    assert render("{fire_time + 6 hours}") == "2026-03-29T06:00:00+00:00"
    assert render("{fire_time - 30 minutes}") == "2026-03-28T23:30:00+00:00"
    assert render("{ fire_time+1hour }") == "2026-03-29T01:00:00+00:00"


def test_day_offsets_step_the_schedule_wall_clock_across_dst() -> None:
    """`{fire_time - 1 day}` of 02:00 CEST on 2026-03-30 is 02:00 CET the day before: 23 h."""
    fire = utc(2026, 3, 30, 0, 0)  # 02:00 CEST
    assert render("{fire_time - 1 day}", fire) == "2026-03-29T01:00:00+00:00"  # 02:00 CET...
    # ...which does not exist on the 29th (the gap), so zoneinfo reads it with the CET offset.
    assert render("{fire_time - 1 week}", fire) == "2026-03-23T01:00:00+00:00"


def test_fire_date_is_the_local_calendar_date() -> None:
    """00:30 UTC is already the next day in Berlin; `{fire_date - 1 day}` is the day before."""
    fire = utc(2026, 7, 1, 22, 30)  # 00:30 CEST on 2 July
    assert render("nightly/{fire_date}/x", fire) == "nightly/2026-07-02/x"
    assert render("{fire_date - 1 day}", fire) == "2026-07-01"


def test_templates_render_every_string_at_any_depth_and_keep_other_values() -> None:
    """Nested dicts and lists are walked; numbers, booleans and null pass through unchanged."""
    template = {
        "kind": "stt",
        "source": {"prefix": "s3://a/{fire_date}/", "modified_since": "{fire_time - 1 day}",
                   "min_bytes": 10},
        "items": [{"text": "at {fire_time}"}],
        "output": {"stitched": False, "prefix": None},
    }  # fmt: skip
    out = render(template)
    assert out == {
        "kind": "stt",
        "source": {"prefix": "s3://a/2026-03-29/", "modified_since": "2026-03-28T00:00:00+00:00",
                   "min_bytes": 10},
        "items": [{"text": "at 2026-03-29T00:00:00+00:00"}],
        "output": {"stitched": False, "prefix": None},
    }  # fmt: skip
    assert template["items"] == [{"text": "at {fire_time}"}]  # the template itself is untouched


def test_doubled_braces_are_literal_braces() -> None:
    """`{{` and `}}` render as `{` and `}`, so JSON-looking text survives."""
    assert render('{{"at": "{fire_date}"}}') == '{"at": "2026-03-29"}'


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{job_id}", "{job_id} is not a placeholder"),
        ("{fire_time - 1 fortnight}", "not a placeholder"),
        ("{fire_time - day}", "not a placeholder"),
        ("{fire_time * 2 days}", "not a placeholder"),
        ("{fire_time - 99999 days}", "not a placeholder"),
        ("{fire-time}", "not a placeholder"),
        ("open { brace", "a lone '{'"),
        ("close } brace", "a lone '}'"),
    ],
)
def test_unknown_placeholders_and_malformed_offsets_are_refused(value: str, fragment: str) -> None:
    """Each broken string raises TemplateError naming where it is and what is wrong."""
    with pytest.raises(TemplateError) as caught:
        render({"output": {"prefix": value}})
    assert caught.value.where == "job.output.prefix"
    assert fragment in caught.value.message


def test_templates_nested_too_deep_are_refused() -> None:
    """A template nested past MAX_DEPTH is refused instead of recursing without bound."""
    deep: object = "x"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(TemplateError, match="nested deeper"):
        render({"items": deep})


def test_the_readme_nightly_archive_example_renders_yesterdays_window() -> None:
    """02:00 Berlin on 2026-03-30: `modified_since` is 02:00 the day before, a valid job body."""
    from jobs.schemas import JobCreate

    template = {
        "kind": "stt",
        "provider": "deepgram",
        "source": {"prefix": "s3://archive/calls/", "pattern": "*.wav",
                   "modified_since": "{fire_time - 1 day}"},
        "output": {"prefix": "transcripts/{fire_date}"},
        "webhook_url": "https://hooks.example.com/speechbatch",
    }  # fmt: skip
    fire = next_fire_times("0 2 * * *", BERLIN, utc(2026, 3, 29, 12), 1)[0]
    body = JobCreate.model_validate(render(template, fire))
    assert body.source is not None and body.source.modified_since == utc(2026, 3, 29, 1)
    assert body.output.prefix == "transcripts/2026-03-30"
