"""ISO 8601 durations (``PT30S``, ``P1DT2H``, ``P2W``) parsed, and timestamps written, in this one place.

Years and months have no fixed length; like Logic Apps we take a year as 365 days and a
month as 30 days, and say so rather than guess a calendar.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_PATTERN = re.compile(
    r"^P(?!$)"
    r"(?:(?P<years>\d+(?:\.\d+)?)Y)?"
    r"(?:(?P<months>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<weeks>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?!$)"
    r"(?:(?P<hours>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?"
    r")?$"
)

_SECONDS = {
    "years": 365 * 86400,
    "months": 30 * 86400,
    "weeks": 7 * 86400,
    "days": 86400,
    "hours": 3600,
    "minutes": 60,
    "seconds": 1,
}


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration; raise ``ValueError`` with the reason when it is not one."""
    match = _PATTERN.match(text.strip().upper()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 duration (for example PT30S, PT1H, P1D)")
    total = sum(float(value) * _SECONDS[unit] for unit, value in match.groupdict().items() if value)
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The shortest ``PT..S``-style form of a duration, for messages and defaults."""
    seconds = value.total_seconds()
    whole = int(seconds)
    return f"PT{whole}S" if whole == seconds else f"PT{seconds:g}S"


def iso(value: datetime) -> str:
    """A UTC timestamp as ISO 8601 with a ``Z``: how every time leaves Hookflow."""
    # Always six fractional digits: stored timestamps are compared as text, and a missing
    # fraction would sort ".5" before "Z" the wrong way round.
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
