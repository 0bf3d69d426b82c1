"""Fire-time placeholders in a schedule's job template: the grammar, its check and its rendering.

A schedule stores a job create body (`POST /v1/jobs`) as a template. Before each fire, every
string in it, at any depth (so `source.modified_since`, `output.prefix`, an item's text or a
`webhook_url` alike), has its placeholders replaced. The grammar is deliberately tiny:

    placeholder := "{" name [ sign number unit ] "}"
    name        := "fire_time" | "fire_date"
    sign        := "+" | "-"
    number      := 1 to 4 digits
    unit        := minute[s] | hour[s] | day[s] | week[s]
    "{{" and "}}" stand for a literal "{" and "}"

- `{fire_time}` is the fire time as ISO 8601 in UTC with its offset, whole seconds:
  `2026-03-29T00:00:00+00:00`.
- `{fire_date}` is the fire time's calendar date in the schedule's timezone: `2026-03-29`.
- An offset moves the fire time first. Minutes and hours are elapsed time; days and weeks are
  calendar steps on the schedule's wall clock, so `{fire_time - 1 day}` of a 02:00 Berlin fire
  is 02:00 Berlin the day before even across a DST change (23 or 25 hours earlier), which is
  what "yesterday's recordings" means. A wall time that does not exist (the spring-forward
  gap) resolves as `zoneinfo` does (fold=0: the offset from before the gap).

Anything else between braces (`{fire-time}`, `{fire_time - 1 fortnight}`, `{job_id}`, a lone
`{`) is refused when the schedule is created or changed (`TemplateError`, 422
`invalid_template`), never at 02:00 when nobody is looking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# One token of a template string: an escaped brace, a placeholder, or a lone brace (an error).
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PLACEHOLDER = re.compile(
    r"\s*(fire_time|fire_date)\s*(?:([+-])\s*([0-9]{1,4})\s*(minute|hour|day|week)s?)?\s*"
)
_ELAPSED = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
_CALENDAR_DAYS = {"day": 1, "week": 7}
MAX_DEPTH = 32  # a template nests no deeper than a job body does, with room to spare


class TemplateError(ValueError):
    """A template string that does not follow the grammar; `where` is its JSON path."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


@dataclass(frozen=True)
class Placeholder:
    """One parsed `{name [+-N unit]}`."""

    name: str
    sign: int = 0
    amount: int = 0
    unit: str = ""

    def moved(self, fire_time: datetime, tz: ZoneInfo) -> datetime:
        """The fire time with this placeholder's offset applied (aware, in `tz`)."""
        local = fire_time.astimezone(tz)
        if not self.unit:
            return local
        if self.unit in _ELAPSED:
            # Elapsed time is added in UTC: aware arithmetic within one zone is wall-clock.
            elapsed = self.sign * self.amount * _ELAPSED[self.unit]
            return (fire_time.astimezone(UTC) + elapsed).astimezone(tz)
        days = self.sign * self.amount * _CALENDAR_DAYS[self.unit]
        wall = local.replace(tzinfo=None) + timedelta(days=days)
        return wall.replace(tzinfo=tz)

    def render(self, fire_time: datetime, tz: ZoneInfo) -> str:
        moved = self.moved(fire_time, tz)
        if self.name == "fire_date":
            return moved.date().isoformat()
        return moved.astimezone(UTC).replace(microsecond=0).isoformat()


def parse_placeholder(inner: str, where: str) -> Placeholder:
    """The placeholder for the text between braces; TemplateError when it is not one."""
    match = _PLACEHOLDER.fullmatch(inner)
    if match is None:
        raise TemplateError(
            where,
            f"{{{inner}}} is not a placeholder; use {{fire_time}}, {{fire_date}} or an offset "
            "such as {fire_time - 1 day} (units: minutes, hours, days, weeks), and write "
            "{{ and }} for literal braces",
        )
    name, sign, amount, unit = match.groups()
    if sign is None:
        return Placeholder(name)
    return Placeholder(name, 1 if sign == "+" else -1, int(amount), unit)


def _render_string(value: str, where: str, fire_time: datetime, tz: ZoneInfo) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            raise TemplateError(where, f"a lone {token!r}; write {token * 2} for a literal brace")
        return parse_placeholder(match.group(1), where).render(fire_time, tz)

    return _TOKEN.sub(replace, value)


def _walk(value: Any, where: str, depth: int, fire_time: datetime, tz: ZoneInfo) -> Any:
    if depth > MAX_DEPTH:
        raise TemplateError(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return _render_string(value, where, fire_time, tz)
    if isinstance(value, dict):
        return {
            key: _walk(item, f"{where}.{key}", depth + 1, fire_time, tz)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _walk(item, f"{where}[{index}]", depth + 1, fire_time, tz)
            for index, item in enumerate(value)
        ]
    return value


def render_template(template: Any, fire_time: datetime, tz: ZoneInfo) -> Any:
    """A copy of `template` with every placeholder of every string replaced for `fire_time`.

    Raises TemplateError on the first string that breaks the grammar, so the same call,
    made with a sample fire time, is also the check at create and update time.
    """
    return _walk(template, "job", 0, fire_time, tz)
