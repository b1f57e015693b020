"""Retry policies as Logic Apps documents them, and what counts as worth retrying.

Retried: ``408``, ``429``, ``5xx`` and failures to get a response at all. The wait before
retry *n* (1-based) is, for ``exponential``, random in
``[max(2^(n-2) * interval, minimumInterval), min(2^(n-1) * interval, maximumInterval)]``
(retry 1: ``[minimumInterval, min(interval, maximumInterval)]``); for ``fixed``, ``interval``.
A ``Retry-After`` on ``429``/``503`` replaces the computed wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from shared.durations import parse_duration
from shared.models import RetryPolicy

DEFAULT_COUNT = 4
DEFAULT_INTERVAL = timedelta(seconds=7)
DEFAULT_MINIMUM = timedelta(seconds=5)
DEFAULT_MAXIMUM = timedelta(hours=1)

RETRIED_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class Policy:
    kind: str
    count: int
    interval: timedelta
    minimum: timedelta
    maximum: timedelta

    @classmethod
    def of(cls, spec: RetryPolicy | None) -> Policy:
        """The effective policy; no ``retryPolicy`` means the default exponential one."""
        spec = spec or RetryPolicy()
        if spec.type == "none":
            return cls("none", 0, timedelta(0), timedelta(0), timedelta(0))
        interval = parse_duration(spec.interval) if spec.interval else DEFAULT_INTERVAL
        if spec.type == "fixed":
            return cls("fixed", spec.count or DEFAULT_COUNT, interval, interval, interval)
        return cls(
            "exponential",
            spec.count if spec.count is not None else DEFAULT_COUNT,
            interval,
            parse_duration(spec.minimum_interval) if spec.minimum_interval else min(DEFAULT_MINIMUM, interval),
            parse_duration(spec.maximum_interval) if spec.maximum_interval else DEFAULT_MAXIMUM,
        )

    def delay(self, retry: int, rand: Callable[[float, float], float] = random.uniform) -> timedelta | None:
        """The wait before retry number ``retry`` (1-based), or ``None`` when none is left."""
        if retry > self.count:
            return None
        if self.kind == "fixed":
            return self.interval
        if retry == 1:
            low, high = self.minimum, min(self.interval, self.maximum)
        else:
            low = max(self.interval * 2 ** (retry - 2), self.minimum)
            high = min(self.interval * 2 ** (retry - 1), self.maximum)
        low = min(low, self.maximum)  # late retries: the doubling passes the maximum; the maximum wins
        high = max(low, high)
        return timedelta(seconds=rand(low.total_seconds(), high.total_seconds()))


def retryable_status(status: int) -> bool:
    return status in RETRIED_STATUSES


def retry_after(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or as an HTTP date; ``None`` when absent or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(timedelta(0), when - now)
