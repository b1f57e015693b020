"""A small stand-in for the Azure Functions host, for machines without Core Tools.

It serves ``function_app.app`` the way the host does: every HTTP function at
``/api/<route>`` built from ``app.get_functions()``, real ``azure.functions.HttpRequest`` /
``HttpResponse`` objects, timer functions on their NCRONTAB schedule, and the admin endpoint
``POST /admin/functions/<name>`` to fire a timer now. Where Core Tools is installed,
``func start`` serves the same app unchanged: nothing here is imported by the app.

Differences from the real host, all on purpose:

* ``POST /admin/functions/<name>`` runs the function *synchronously* and answers ``200`` with
  ``{"name", "status": "Succeeded" | "Failed", "error"}`` once it has finished (the host answers
  ``202`` at once), so tests need no polling.
* No function keys are asked, whatever ``authLevel`` says (like ``func start``).
* Only HTTP and timer triggers are served; other bindings are reported at start.
* Timer schedules are evaluated in UTC (``WEBSITE_TIME_ZONE`` is ignored). Like NCrontab, a
  day must match both the day-of-month and the day-of-week field.
* Failures answer a JSON error body ``{"error": {"code", "message"}}`` instead of an empty one.

Command line (foreground until Ctrl-C)::

    python -m scripts.devhost [--port 7071] [--app function_app:app] [--no-timers]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

import azure.functions as func

# func.TimerRequest is the abstract interface; the worker hands functions this concrete class.
from azure.functions.timer import TimerRequest

__all__ = [
    "DEFAULT_PORT",
    "DEV_SIGNING_KEY_FILE",
    "MAX_REQUEST_BODY_BYTES",
    "REPO_ROOT",
    "CronSchedule",
    "DevHost",
    "DevHostError",
    "FunctionAppLike",
    "InvocationResult",
    "RouteMatch",
    "RouteTable",
    "RouteTemplate",
    "ensure_dev_signing_key",
    "load_local_settings",
    "main",
    "read_route_prefix",
    "resolve_app_settings",
]

logger = logging.getLogger("hookflow.devhost")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 7071
DEFAULT_ROUTE_PREFIX = "api"
# The Functions host's own request size limit; Hookflow's HOOKFLOW_MAX_BODY_BYTES is checked
# by the app itself, as it is when deployed.
MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024
DEV_SIGNING_KEY_FILE = Path(".hookflow") / "dev-signing-key"
# A tick that starts later than this after its due time is reported as past due.
_PAST_DUE_TOLERANCE = timedelta(seconds=1)
# The scheduler re-reads the wall clock at least this often, so clock jumps are noticed.
_SCHEDULER_MAX_SLEEP = 30.0
_STOP_JOIN_TIMEOUT = 10.0

T = TypeVar("T")


class DevHostError(RuntimeError):
    """The dev host cannot start (port in use, bad host.json, app not found)."""


class FunctionAppLike(Protocol):
    """What the dev host needs from ``azure.functions.FunctionApp``."""

    def get_functions(self) -> Iterable[Any]: ...


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


def load_local_settings(root: Path = REPO_ROOT, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Copy ``Values`` of ``local.settings.json`` (else the sample) into the environment.

    Variables already set win, as they do with ``func start``, so a shell ``export`` always
    overrides the file. Returns the file read, ``None`` when there is none.
    """
    env = os.environ if environ is None else environ
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = root / name
        if path.is_file():
            break
    else:
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DevHostError(f"{name} is not valid JSON: {exc}") from exc
    values = document.get("Values", {}) if isinstance(document, dict) else {}
    if not isinstance(values, dict):
        raise DevHostError(f"{name}: Values must be an object")
    for key, value in values.items():
        if key not in env:
            env[str(key)] = _setting_text(value)
    return path


def _setting_text(value: object) -> str:
    # App settings are strings on Azure; a JSON true or 5 in the file means "true" or "5".
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def ensure_dev_signing_key(root: Path = REPO_ROOT, environ: MutableMapping[str, str] | None = None) -> bool:
    """Give ``HOOKFLOW_SIGNING_KEYS`` a per-machine random key when it is empty.

    The key lives in ``.hookflow/dev-signing-key`` (gitignored, mode 0600) so callback URLs
    stay valid across restarts. Returns whether the dev key is in use.
    """
    env = os.environ if environ is None else environ
    if env.get("HOOKFLOW_SIGNING_KEYS", "").strip():
        return False
    path = root / DEV_SIGNING_KEY_FILE
    key = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if not key:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # an empty leftover file: replace it
        # O_EXCL + 0600 from the start: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
    env["HOOKFLOW_SIGNING_KEYS"] = key
    logger.info("HOOKFLOW_SIGNING_KEYS is empty: using the local dev key in %s", DEV_SIGNING_KEY_FILE.as_posix())
    return True


def read_route_prefix(host_json: Path) -> str:
    """``extensions.http.routePrefix`` of host.json; ``api`` when absent (the host's default)."""
    if not host_json.is_file():
        return DEFAULT_ROUTE_PREFIX
    try:
        document = json.loads(host_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DevHostError(f"{host_json.name} is not valid JSON: {exc}") from exc
    prefix = document.get("extensions", {}).get("http", {}).get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise DevHostError(f"{host_json.name}: extensions.http.routePrefix must be a string")
    return prefix.strip("/")


_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


def resolve_app_settings(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace each ``%NAME%`` with the app setting ``NAME``, as the host does for binding values."""
    env = os.environ if environ is None else environ

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = env.get(name, "")
        if not resolved.strip():
            raise ValueError(f"app setting {name} is not set")
        return resolved

    return _SETTING_REFERENCE.sub(lookup, value)


# ---------------------------------------------------------------------------------------
# Route templates
# ---------------------------------------------------------------------------------------


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


_CONSTRAINT_CHECKS: dict[str, Callable[[str], bool]] = {
    "int": lambda v: re.fullmatch(r"-?\d+", v) is not None,
    "long": lambda v: re.fullmatch(r"-?\d+", v) is not None,
    "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "bool": lambda v: v.lower() in ("true", "false"),
    "guid": _is_guid,
    "double": _is_number,
    "float": _is_number,
    "decimal": _is_number,
}


@dataclass(frozen=True)
class _ParamText:
    """The text between ``{`` and ``}`` of a route parameter."""

    body: str


@dataclass(frozen=True)
class _Parameter:
    name: str
    group: str
    constraints: tuple[str, ...]
    optional: bool
    default: str | None
    catch_all: bool


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled ASP.NET-style route template such as ``workflows/{name}/runs/{id?}``.

    Supports literal segments, ``{name}``, ``{name:constraint}``, ``{name?}``,
    ``{name=default}``, ``{*rest}`` / ``{**rest}`` and mixed segments like ``{name}.{ext}``.
    The constraints ``int``, ``long``, ``alpha``, ``bool``, ``guid``, ``double``, ``float`` and
    ``decimal`` are checked; others (``regex``, ``min``, ...) are accepted and ignored.
    Literal text matches case-insensitively, as in ASP.NET Core.
    """

    template: str
    pattern: re.Pattern[str]
    parameters: tuple[_Parameter, ...]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        """Compile ``template``; raise ``ValueError`` on malformed braces."""
        text = template.strip()
        text = text.removeprefix("~").strip("/")
        segments = text.split("/") if text else []
        regex: list[str] = []
        parameters: list[_Parameter] = []
        precedence: list[int] = []
        for index, segment in enumerate(segments):
            if not segment:
                raise ValueError(f"route {template!r} has an empty segment")
            parts = _split_segment(segment, template)
            if len(parts) == 1 and isinstance(parts[0], str):
                regex.append("/" + re.escape(parts[0]))
                precedence.append(1)
                continue
            if len(parts) == 1:
                spec = parts[0]
                assert isinstance(spec, _ParamText)
                param = _make_parameter(spec.body, len(parameters), template)
                parameters.append(param)
                if param.catch_all:
                    if index != len(segments) - 1:
                        raise ValueError(f"route {template!r}: a catch-all parameter must be the last segment")
                    regex.append(f"(?:/(?P<{param.group}>.*))?")
                    precedence.append(5)
                elif param.optional or param.default is not None:
                    regex.append(f"(?:/(?P<{param.group}>[^/]+))?")
                    precedence.append(3 if param.constraints else 4)
                else:
                    regex.append(f"/(?P<{param.group}>[^/]+)")
                    precedence.append(3 if param.constraints else 4)
                continue
            # A mixed segment such as "{name}.{ext}": greedy parameters, like ASP.NET's
            # right-to-left matching, give "a.b.c" -> name "a.b", ext "c".
            piece = "/"
            for part in parts:
                if isinstance(part, str):
                    piece += re.escape(part)
                else:
                    param = _make_parameter(part.body, len(parameters), template)
                    if param.catch_all:
                        raise ValueError(f"route {template!r}: a catch-all parameter cannot share a segment")
                    parameters.append(param)
                    piece += f"(?P<{param.group}>[^/]+)"
            regex.append(piece)
            precedence.append(2)
        names = [p.name.lower() for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"route {template!r} uses a parameter name twice")
        pattern = re.compile("^" + "".join(regex) + "/?$", re.IGNORECASE)
        return cls(template=template, pattern=pattern, parameters=tuple(parameters), precedence=tuple(precedence))

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for ``path`` (the part after the route prefix, still percent-encoded), or ``None``.

        Values are percent-decoded; absent optional parameters take their default or are left out.
        """
        found = self.pattern.match(path if path.startswith("/") or not path else "/" + path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for param in self.parameters:
            raw = found.group(param.group)
            if raw is None or raw == "":
                if param.default is not None:
                    values[param.name] = param.default
                continue
            value = unquote(raw)
            for constraint in param.constraints:
                check = _CONSTRAINT_CHECKS.get(constraint.split("(", 1)[0].lower())
                if check is not None and not check(value):
                    return None
            values[param.name] = value
        return values

    @property
    def literal_segments(self) -> int:
        """How many segments are plain literals."""
        return sum(1 for p in self.precedence if p == 1)


def _split_segment(segment: str, template: str) -> list[str | _ParamText]:
    """Split one segment into literal text and ``{...}`` parameter bodies (``{{``/``}}`` escape braces)."""
    parts: list[str | _ParamText] = []
    literal = ""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "{" and segment.startswith("{{", i):
            literal += "{"
            i += 2
        elif ch == "}" and segment.startswith("}}", i):
            literal += "}"
            i += 2
        elif ch == "{":
            body = ""
            i += 1
            while True:
                if i >= len(segment):
                    raise ValueError(f"route {template!r}: unclosed '{{' in {segment!r}")
                if segment.startswith("}}", i):
                    body += "}"
                    i += 2
                elif segment[i] == "}":
                    i += 1
                    break
                else:
                    body += segment[i]
                    i += 1
            if literal:
                parts.append(literal)
                literal = ""
            if parts and not isinstance(parts[-1], str):
                raise ValueError(f"route {template!r}: two parameters need literal text between them")
            parts.append(_ParamText(body))
        elif ch == "}":
            raise ValueError(f"route {template!r}: unmatched '}}' in {segment!r}")
        else:
            literal += ch
            i += 1
    if literal:
        parts.append(literal)
    return parts


def _make_parameter(spec: str, index: int, template: str) -> _Parameter:
    text = spec.strip()
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    optional = text.endswith("?")
    text = text.removesuffix("?")
    default: str | None = None
    head, eq, tail = _split_outside_parens(text, "=")
    if eq:
        default, text = tail, head
    pieces = _split_all_outside_parens(text, ":")
    name = pieces[0].strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"route {template!r}: bad parameter name {name!r}")
    return _Parameter(
        name=name,
        group=f"p{index}",
        constraints=tuple(p.strip() for p in pieces[1:] if p.strip()),
        optional=optional,
        default=default,
        catch_all=catch_all,
    )


def _split_outside_parens(text: str, sep: str) -> tuple[str, bool, str]:
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            return text[:i], True, text[i + 1 :]
    return text, False, ""


def _split_all_outside_parens(text: str, sep: str) -> list[str]:
    pieces: list[str] = []
    rest = text
    while True:
        head, found, tail = _split_outside_parens(rest, sep)
        pieces.append(head)
        if not found:
            return pieces
        rest = tail


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    """Outcome of :meth:`RouteTable.resolve`: a target, or the methods the path allows."""

    target: T | None
    route_params: dict[str, str]
    allowed_methods: frozenset[str]

    @property
    def path_matched(self) -> bool:
        """Whether some route matched the path (a ``None`` target then means 405)."""
        return bool(self.allowed_methods) or self.target is not None


@dataclass(frozen=True)
class _Route(Generic[T]):
    template: RouteTemplate
    methods: frozenset[str] | None  # None = every method
    target: T


_ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class RouteTable(Generic[T]):
    """Routes ordered like ASP.NET Core: segment by segment, a literal beats a mixed segment,
    which beats a constrained parameter, then a plain parameter, then a catch-all.

    So ``workflows/list`` wins over ``workflows/{name}``, and ``runs/{id}/cancel`` over
    ``runs/{id}/{action}``. Method filtering comes first: a lower-precedence route that
    accepts the method beats a higher one that does not, as with ASP.NET endpoint routing.
    """

    def __init__(self) -> None:
        self._routes: list[_Route[T]] = []

    def add(self, template: str | RouteTemplate, methods: Iterable[str] | None, target: T) -> None:
        """Register ``target`` for ``template`` and ``methods`` (``None`` = every method)."""
        compiled = template if isinstance(template, RouteTemplate) else RouteTemplate.parse(template)
        wanted = None if methods is None else frozenset(m.upper() for m in methods)
        self._routes.append(_Route(compiled, wanted, target))
        self._routes.sort(key=lambda r: (r.template.precedence, -r.template.literal_segments, r.template.template))

    def resolve(self, method: str, path: str) -> RouteMatch[T]:
        """Find the best route for ``method`` and ``path`` (after the route prefix)."""
        allowed: set[str] = set()
        method = method.upper()
        for route in self._routes:
            values = route.template.match(path)
            if values is None:
                continue
            if route.methods is None or method in route.methods:
                return RouteMatch(route.target, values, frozenset())
            allowed |= route.methods
        return RouteMatch(None, {}, frozenset(allowed))


# ---------------------------------------------------------------------------------------
# NCRONTAB
# ---------------------------------------------------------------------------------------

_MONTH_NAMES = dict(
    zip(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), range(1, 13), strict=True)
)
_DAY_NAMES = dict(zip(("sun", "mon", "tue", "wed", "thu", "fri", "sat"), range(7), strict=True))
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _DAY_NAMES),
)
# A schedule that names 31 February never fires; stop looking after this many years.
_CRON_SEARCH_YEARS = 8


@dataclass(frozen=True)
class CronSchedule:
    """A 6-field NCRONTAB schedule, ``{second} {minute} {hour} {day} {month} {day-of-week}``.

    Each field takes ``*``, ``n``, ``a-b``, ``a,b``, ``*/n``, ``a-b/n`` and ``a/n``; months and
    days of the week also take names (``Jan``, ``Mon``); Sunday is 0 or 7. As in NCrontab,
    the day-of-month and day-of-week fields must both match.
    """

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse an expression; raise ``ValueError`` naming the bad field."""
        fields = expression.split()
        if len(fields) != 6:
            raise ValueError(
                f"NCRONTAB {expression!r} needs 6 fields: "
                "{second} {minute} {hour} {day} {month} {day-of-week}"
            )
        sets = [
            _parse_cron_field(text, name, low, high, names)
            for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in sets[5])
        return cls(expression, sets[0], sets[1], sets[2], sets[3], sets[4], weekdays)

    def matches(self, moment: datetime) -> bool:
        """Whether ``moment`` (to the second, UTC) is an occurrence."""
        moment = _as_utc(moment)
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.day in self.days
            and moment.month in self.months
            and (moment.weekday() + 1) % 7 in self.weekdays
        )

    def next_after(self, after: datetime) -> datetime:
        """The first occurrence strictly after ``after``, in UTC (naive datetimes are taken as UTC)."""
        t = _as_utc(after).replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + _CRON_SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = _start_of_next_month(t)
                continue
            if t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += timedelta(seconds=1)
                continue
            return t
        raise ValueError(f"NCRONTAB {self.expression!r} has no occurrence in the next {_CRON_SEARCH_YEARS} years")


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _start_of_next_month(t: datetime) -> datetime:
    if t.month == 12:
        return t.replace(year=t.year + 1, month=1, day=1, hour=0, minute=0, second=0)
    return t.replace(month=t.month + 1, day=1, hour=0, minute=0, second=0)


def _parse_cron_field(text: str, name: str, low: int, high: int, names: Mapping[str, int]) -> frozenset[int]:
    def value(token: str) -> int:
        if token.isdigit():
            number = int(token)
        elif token.lower() in names:
            number = names[token.lower()]
        else:
            raise ValueError(f"NCRONTAB {name} field: {token!r} is not a number")
        if not low <= number <= high:
            raise ValueError(f"NCRONTAB {name} field: {number} is outside {low}-{high}")
        return number

    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"NCRONTAB {name} field: step in {part!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            # Sunday is both 0 and 7; "*" means each day once.
            start, end = low, (6 if name == "day-of-week" else high)
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = value(first), value(last)
            if start > end:
                raise ValueError(f"NCRONTAB {name} field: range {base!r} runs backwards")
        elif base:
            start = value(base)
            end = high if slash else start
        else:
            raise ValueError(f"NCRONTAB {name} field: empty item in {text!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


# ---------------------------------------------------------------------------------------
# Functions found in the app
# ---------------------------------------------------------------------------------------


@dataclass
class _HttpFunction:
    name: str
    arg_name: str
    route: RouteTemplate
    methods: frozenset[str] | None
    user_function: Callable[..., Any]


@dataclass
class _TimerFunction:
    name: str
    arg_name: str
    schedule_text: str
    run_on_startup: bool
    user_function: Callable[..., Any]
    schedule: CronSchedule | None = None
    schedule_error: str | None = None
    next_due: datetime | None = None
    # Held while an invocation runs: a tick that finds it held is skipped, never overlapped.
    running: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class InvocationResult:
    """Outcome of one invocation fired through the admin endpoint or :meth:`DevHost.run_function`."""

    name: str
    succeeded: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The admin endpoint's answer body."""
        return {"name": self.name, "status": "Succeeded" if self.succeeded else "Failed", "error": self.error}


@dataclass(frozen=True)
class _InvocationContext:
    """What a function gets for a ``context`` parameter (the worker passes ``func.Context``)."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = None


def _text(value: object) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _discover(app: FunctionAppLike) -> tuple[list[_HttpFunction], list[_TimerFunction], list[str]]:
    http: list[_HttpFunction] = []
    timers: list[_TimerFunction] = []
    notes: list[str] = []
    for fn in app.get_functions():
        name = str(fn.get_function_name())
        bindings = [b.get_dict_repr() for b in fn.get_bindings()]
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        user_function = fn.get_user_function()
        if trigger is None:
            notes.append(f"{name}: no trigger, not served")
            continue
        kind = str(trigger["type"])
        extra = [str(b.get("type")) for b in bindings if b is not trigger and b.get("name") != "$return"]
        if extra:
            notes.append(f"{name}: bindings {', '.join(extra)} are not supplied by the dev host")
        if kind == "httpTrigger":
            methods = trigger.get("methods")
            http.append(
                _HttpFunction(
                    name=name,
                    arg_name=str(trigger["name"]),
                    route=RouteTemplate.parse(str(trigger.get("route") or name)),
                    methods=None if not methods else frozenset(_text(m).upper() for m in methods),
                    user_function=user_function,
                )
            )
        elif kind == "timerTrigger":
            timers.append(
                _TimerFunction(
                    name=name,
                    arg_name=str(trigger["name"]),
                    schedule_text=str(trigger.get("schedule", "")),
                    run_on_startup=bool(trigger.get("runOnStartup", False)),
                    user_function=user_function,
                )
            )
        else:
            notes.append(f"{name}: {kind} is not served by the dev host")
    return http, timers, notes


def _invoke(user_function: Callable[..., Any], function_name: str, kwargs: dict[str, Any]) -> Any:
    """Call a user function like the worker: keyword arguments, ``context`` if asked, async awaited."""
    try:
        wants_context = "context" in inspect.signature(user_function).parameters
    except (TypeError, ValueError):
        wants_context = False
    if wants_context and "context" not in kwargs:
        kwargs = {
            **kwargs,
            "context": _InvocationContext(
                invocation_id=str(uuid.uuid4()),
                function_name=function_name,
                function_directory=str(REPO_ROOT),
            ),
        }
    result = user_function(**kwargs)
    if inspect.isawaitable(result):
        # Each request runs on its own thread; a private loop per call keeps them apart.
        async def wait() -> Any:
            return await result

        result = asyncio.run(wait())
    return result


# ---------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    close: bool = False


class _HttpProblem(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.close = close


def _json_reply(status: int, document: object, headers: Sequence[tuple[str, str]] = ()) -> _Reply:
    body = json.dumps(document).encode("utf-8")
    return _Reply(status, [("Content-Type", "application/json; charset=utf-8"), *headers], body)


def _error_reply(
    status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = (), *, close: bool = False
) -> _Reply:
    reply = _json_reply(status, {"error": {"code": code, "message": message}}, headers)
    reply.close = close
    return reply


# Framing headers are ours to set; a function's own copy would contradict the real body.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def _reply_from_result(result: object) -> _Reply:
    if isinstance(result, func.HttpResponse):
        headers = [(str(k), str(v)) for k, v in result.headers.items() if str(k).lower() not in _HOP_BY_HOP]
        if not any(k.lower() == "content-type" for k, _ in headers) and result.mimetype:
            mimetype = str(result.mimetype)
            content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
            headers.append(("Content-Type", content_type))
        return _Reply(int(result.status_code), headers, result.get_body())
    if result is None:
        return _Reply(HTTPStatus.NO_CONTENT, [], b"")
    if isinstance(result, str):
        return _Reply(HTTPStatus.OK, [("Content-Type", "text/plain; charset=utf-8")], result.encode("utf-8"))
    if isinstance(result, bytes | bytearray):
        return _Reply(HTTPStatus.OK, [("Content-Type", "application/octet-stream")], bytes(result))
    raise TypeError(f"an HTTP function must return func.HttpResponse, str or bytes, not {type(result).__name__}")


class _Server(HTTPServer):
    """One thread per connection, with every open connection tracked so stop() can end them."""

    daemon_threads = True
    # The base class's 5 drops connections under a burst of parallel clients (benchmarks).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], devhost: DevHost) -> None:
        self.devhost = devhost
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup for server_name; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), name="devhost-http", daemon=True
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are routine; anything else is worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            logger.debug("connection from %s ended: %s", client_address, type(exc).__name__)
        else:
            logger.error("unexpected error serving a connection:\n%s", traceback.format_exc())

    def close_connections(self, timeout: float) -> None:
        """Hang up every open connection and wait (bounded) for its thread."""
        with self._connections_lock:
            open_connections = list(self._connections.items())
        for sock, _ in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_connections:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("a request is still running after stop(); leaving its thread behind")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "HookflowDevHost"
    # Idle keep-alive connections end after this long instead of holding a thread forever.
    timeout = 30
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK of the headers (40 ms on Linux) on every keep-alive response.
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        started = time.monotonic()
        try:
            reply = self.server.devhost._handle(self)
        except Exception:
            logger.exception("dev host error on %s %s", self.command, urlsplit(self.path).path)
            reply = _error_reply(HTTPStatus.INTERNAL_SERVER_ERROR, "InternalError", "dev host error", close=True)
        self._send(reply)
        # The path only: query strings and bodies may carry callback signatures.
        logger.info(
            "%s %s -> %d (%.0f ms)",
            self.command,
            urlsplit(self.path).path,
            reply.status,
            (time.monotonic() - started) * 1000,
        )

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _send(self, reply: _Reply) -> None:
        no_body = self.command == "HEAD" or reply.status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.status not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.send_header("Content-Length", str(len(reply.body)))
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not no_body:
            self.wfile.write(reply.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: :meth:`_dispatch` logs a line without the query string."""

    def log_error(self, format: str, *args: Any) -> None:
        # The base message quotes the raw request line, query string included.
        logger.debug("rejected a malformed or timed-out request from %s", self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced for the same reason as :meth:`log_error`."""


def _read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(handler, limit)
    length_text = handler.headers.get("Content-Length")
    if length_text is None:
        return b""
    if not length_text.strip().isdigit():
        raise _HttpProblem(HTTPStatus.BAD_REQUEST, "BadRequest", "Content-Length is not a number", close=True)
    length = int(length_text)
    if length > limit:
        raise _HttpProblem(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLarge", f"the body is over {limit} bytes", close=True
        )
    body = handler.rfile.read(length)
    if len(body) != length:
        raise _HttpProblem(HTTPStatus.BAD_REQUEST, "BadRequest", "the body ended early", close=True)
    return body


def _read_chunked(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = handler.rfile.readline(1024).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _HttpProblem(HTTPStatus.BAD_REQUEST, "BadRequest", "bad chunk size", close=True) from None
        if size == 0:
            # Trailers (usually none) end with an empty line.
            while handler.rfile.readline(8192).strip():
                pass
            return b"".join(chunks)
        total += size
        if total > limit:
            raise _HttpProblem(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLarge", f"the body is over {limit} bytes", close=True
            )
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline(8)  # the CRLF after each chunk


# ---------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------


class DevHost:
    """Serve a ``FunctionApp`` over HTTP on ``host:port`` with its timers, like the Functions host.

    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`). ``route_prefix=None``
    reads ``extensions.http.routePrefix`` from ``host_json`` (default: the repository's
    host.json), falling back to ``api``.
    """

    def __init__(
        self,
        app: FunctionAppLike,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        route_prefix: str | None = None,
        timers_enabled: bool = True,
        *,
        host_json: Path | None = None,
        max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
    ) -> None:
        self.host = host
        self._requested_port = port
        if route_prefix is None:
            route_prefix = read_route_prefix(host_json if host_json is not None else REPO_ROOT / "host.json")
        self.route_prefix = route_prefix.strip("/")
        self.timers_enabled = timers_enabled
        self.max_body_bytes = max_body_bytes
        http_functions, timer_functions, self.notes = _discover(app)
        self._routes: RouteTable[_HttpFunction] = RouteTable()
        for fn in http_functions:
            self._routes.add(fn.route, fn.methods, fn)
        self._http_functions = http_functions
        self._timers = {t.name.lower(): t for t in timer_functions}
        self._by_name: dict[str, _HttpFunction | _TimerFunction] = {
            **{f.name.lower(): f for f in http_functions},
            **self._timers,
        }
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._timer_threads: set[threading.Thread] = set()
        self._timer_threads_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._lifecycle = threading.Lock()

    # -- properties -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port served (the picked one when constructed with ``port=0``)."""
        if self._server is None:
            if self._requested_port == 0:
                raise DevHostError("the port is picked at start(); call start() first")
            return self._requested_port
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:7071``; the admin API lives under it."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Where HTTP functions live, e.g. ``http://127.0.0.1:7071/api``."""
        return f"{self.base_url}/{self.route_prefix}" if self.route_prefix else self.base_url

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has run and :meth:`stop` has not."""
        return self._server is not None

    def describe_functions(self) -> list[str]:
        """One line per function, in the style of ``func start``'s listing."""
        lines: list[str] = []
        for fn in sorted(self._by_name.values(), key=lambda f: f.name.lower()):
            if isinstance(fn, _HttpFunction):
                methods = ",".join(sorted(fn.methods)) if fn.methods else "ALL"
                path = fn.route.template.strip("/")
                lines.append(f"{fn.name}: [{methods}] {self.api_url}/{path}")
            else:
                state = fn.schedule_error or (fn.schedule.expression if fn.schedule else fn.schedule_text)
                lines.append(f"{fn.name}: timerTrigger ({state})")
        return lines

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port and start serving and scheduling in background threads."""
        with self._lifecycle:
            if self._server is not None:
                return self
            self._stopping.clear()
            self._stopped.clear()
            try:
                server = _Server((self.host, self._requested_port), self)
            except OSError as exc:
                if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                    raise DevHostError(
                        f"port {self._requested_port} on {self.host} is already in use: "
                        "stop what listens there or pass another port"
                    ) from exc
                raise DevHostError(f"cannot listen on {self.host}:{self._requested_port}: {exc}") from exc
            self._server = server
            serve = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="devhost-serve", daemon=True
            )
            serve.start()
            self._threads = [serve]
            self._resolve_schedules()
            if self.timers_enabled and self._timers:
                scheduler = threading.Thread(target=self._schedule_loop, name="devhost-timers", daemon=True)
                scheduler.start()
                self._threads.append(scheduler)
            for note in self.notes:
                logger.warning("%s", note)
            return self

    def stop(self) -> None:
        """Stop serving, hang up open connections, stop the scheduler; safe to call twice."""
        with self._lifecycle:
            server = self._server
            if server is None:
                return
            self._stopping.set()
            server.shutdown()  # returns once serve_forever has left its loop
            server.close_connections(_STOP_JOIN_TIMEOUT)
            server.server_close()
            for thread in self._threads:
                thread.join(_STOP_JOIN_TIMEOUT)
            with self._timer_threads_lock:
                running = list(self._timer_threads)
            for thread in running:
                thread.join(_STOP_JOIN_TIMEOUT)
                if thread.is_alive():
                    logger.warning("timer invocation %s still running after stop()", thread.name)
            self._threads = []
            self._server = None
            self._stopped.set()

    def serve_forever(self) -> None:
        """Start if needed and block until :meth:`stop` is called (from another thread or a signal)."""
        self.start()
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- timers ---------------------------------------------------------------------

    def _resolve_schedules(self) -> None:
        for timer in self._timers.values():
            try:
                timer.schedule = CronSchedule.parse(resolve_app_settings(timer.schedule_text))
                timer.schedule_error = None
            except ValueError as exc:
                # The host also keeps serving the other functions when one schedule is bad.
                timer.schedule, timer.schedule_error = None, f"error: {exc}"
                logger.error("timer %s is not scheduled: %s", timer.name, exc)

    def _schedule_loop(self) -> None:
        now = datetime.now(UTC)
        scheduled = [t for t in self._timers.values() if t.schedule is not None]
        if not scheduled:
            return
        for timer in scheduled:
            assert timer.schedule is not None
            timer.next_due = timer.schedule.next_after(now)
            if timer.run_on_startup:
                self._fire(timer, past_due=False, reason="run on startup")
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            for timer in scheduled:
                assert timer.schedule is not None
                assert timer.next_due is not None
                if timer.next_due <= now:
                    self._fire(timer, past_due=now - timer.next_due > _PAST_DUE_TOLERANCE, reason="timer fired")
                    # From now, not from the due time: ticks missed while asleep are skipped.
                    timer.next_due = timer.schedule.next_after(now)
            soonest = min(t.next_due for t in scheduled if t.next_due is not None)
            wait = (soonest - datetime.now(UTC)).total_seconds()
            self._stopping.wait(min(max(wait, 0.01), _SCHEDULER_MAX_SLEEP))

    def _fire(self, timer: _TimerFunction, *, past_due: bool, reason: str) -> None:
        if not timer.running.acquire(blocking=False):
            logger.info("timer %s: previous run still going, skipping this tick", timer.name)
            return

        def run() -> None:
            try:
                self._run_timer(timer, past_due=past_due, reason=reason)
            finally:
                timer.running.release()
                with self._timer_threads_lock:
                    self._timer_threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"devhost-timer-{timer.name}", daemon=True)
        with self._timer_threads_lock:
            self._timer_threads.add(thread)
        thread.start()

    def _run_timer(self, timer: _TimerFunction, *, past_due: bool, reason: str) -> InvocationResult:
        invocation = str(uuid.uuid4())
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", timer.name, reason, invocation)
        started = time.monotonic()
        try:
            _invoke(timer.user_function, timer.name, {timer.arg_name: TimerRequest(past_due=past_due)})
        except Exception as exc:
            logger.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)",
                timer.name,
                invocation,
                (time.monotonic() - started) * 1000,
            )
            return InvocationResult(timer.name, succeeded=False, error=f"{type(exc).__name__}: {exc}")
        logger.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)",
            timer.name,
            invocation,
            (time.monotonic() - started) * 1000,
        )
        return InvocationResult(timer.name, succeeded=True)

    def run_function(self, name: str) -> InvocationResult:
        """Run a timer function now and wait for it, after any run of it already going.

        What ``POST /admin/functions/<name>`` does; raises ``KeyError`` for an unknown timer.
        """
        timer = self._timers[name.lower()]
        with timer.running:
            return self._run_timer(timer, past_due=False, reason="admin request")

    # -- HTTP -----------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> _Reply:
        try:
            target = handler.path
            if target.startswith(("http://", "https://")):
                # Absolute-form request target (proxy style): keep its path and query.
                parts = urlsplit(target)
                target = parts.path + (f"?{parts.query}" if parts.query else "")
            path, _, query = target.partition("?")
            path = path or "/"
            body = _read_body(handler, self.max_body_bytes)
            if path.lower().startswith("/admin/"):
                return self._handle_admin(handler.command, path)
            rest = self._strip_prefix(path)
            if rest is None:
                return _error_reply(HTTPStatus.NOT_FOUND, "NotFound", f"no function serves {path}")
            match = self._routes.resolve(handler.command, rest)
            if match.target is None:
                if match.path_matched:
                    allowed = ", ".join(sorted(match.allowed_methods))
                    return _error_reply(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        f"{handler.command} is not allowed here; use {allowed}",
                        [("Allow", allowed)],
                    )
                return _error_reply(HTTPStatus.NOT_FOUND, "NotFound", f"no function serves {path}")
            return self._call_http(handler, match.target, match.route_params, target, query, body)
        except _HttpProblem as problem:
            return _error_reply(problem.status, problem.code, problem.message, close=problem.close)

    def _strip_prefix(self, path: str) -> str | None:
        if not self.route_prefix:
            return path
        prefix = "/" + self.route_prefix
        if path.lower() == prefix.lower():
            return "/"
        if path.lower().startswith(prefix.lower() + "/"):
            return path[len(prefix) :]
        return None

    def _call_http(
        self,
        handler: _Handler,
        fn: _HttpFunction,
        route_params: dict[str, str],
        target: str,
        query: str,
        body: bytes,
    ) -> _Reply:
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        # The URL as the client addressed it, so the app can derive its own base URL.
        host_header = headers.get("host") or f"{self.host}:{self.port}"
        params = {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}
        request = func.HttpRequest(
            handler.command,
            f"http://{host_header}{target}",
            headers=headers,
            params=params,
            route_params=route_params,
            body=body,
        )
        try:
            result = _invoke(fn.user_function, fn.name, {fn.arg_name: request})
            return _reply_from_result(result)
        except Exception as exc:
            # The traceback helps; the request's query and body stay out (signatures, payloads).
            logger.exception("function %s failed on %s %s", fn.name, handler.command, urlsplit(target).path)
            return _error_reply(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "InternalError",
                f"function {fn.name} raised {type(exc).__name__}; see the dev host log",
            )

    def _handle_admin(self, method: str, path: str) -> _Reply:
        segments = [s for s in path.split("/") if s]
        if [s.lower() for s in segments] == ["admin", "host", "status"]:
            if method not in ("GET", "HEAD"):
                return _error_reply(
                    HTTPStatus.METHOD_NOT_ALLOWED, "MethodNotAllowed", "use GET", [("Allow", "GET, HEAD")]
                )
            return _json_reply(HTTPStatus.OK, {"state": "Running"})
        if len(segments) == 3 and [s.lower() for s in segments[:2]] == ["admin", "functions"]:
            name = unquote(segments[2])
            target = self._by_name.get(name.lower())
            if target is None:
                return _error_reply(HTTPStatus.NOT_FOUND, "NotFound", f"no function named {name}")
            if method != "POST":
                return _error_reply(HTTPStatus.METHOD_NOT_ALLOWED, "MethodNotAllowed", "use POST", [("Allow", "POST")])
            if isinstance(target, _HttpFunction):
                return _error_reply(
                    HTTPStatus.BAD_REQUEST,
                    "BadRequest",
                    f"{target.name} is an HTTP function: call it at {self.api_url}/{target.route.template}",
                )
            return _json_reply(HTTPStatus.OK, self.run_function(target.name).to_json())
        return _error_reply(HTTPStatus.NOT_FOUND, "NotFound", f"no admin endpoint {path}")


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def configure_logging() -> None:
    """Log to stderr at ``HOOKFLOW_LOG_LEVEL`` (default INFO)."""
    level_name = os.environ.get("HOOKFLOW_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    logging.basicConfig(level=level, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s", force=True)
    if level > logging.DEBUG:
        # The Azure SDK logs every storage request's headers at INFO; too loud for a console.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def load_app(spec: str) -> FunctionAppLike:
    """Import ``module:attribute`` (default ``function_app:app``) from the repository root."""
    module_name, _, attribute = spec.partition(":")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if app is None or not callable(getattr(app, "get_functions", None)):
        raise DevHostError(f"{spec} is not an azure.functions.FunctionApp")
    return cast(FunctionAppLike, app)


def run_foreground(host: DevHost, *, healthy: Callable[[], str | None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or until ``healthy`` returns a problem); return an exit code.

    Signal handlers only set a flag: stopping happens here, in the main thread, in ``finally``.
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            host.start()
        except DevHostError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            print("\nFunctions:\n", flush=True)
            for line in host.describe_functions():
                print(f"        {line}")
            print(f"\nHookflow dev host listening on {host.api_url}", flush=True)
            while not stop_requested.wait(0.5):
                problem = healthy() if healthy is not None else None
                if problem:
                    print(f"error: {problem}", file=sys.stderr)
                    return 1
            return 0
        finally:
            host.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _default_port() -> int:
    raw = os.environ.get("PORT", "").strip()
    return int(raw) if raw.isdigit() else DEFAULT_PORT


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.devhost``: serve ``function_app.app`` in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.devhost", description="Serve function_app.app like the Azure Functions host."
    )
    parser.add_argument("--port", type=int, default=_default_port(), help="port (default: $PORT or 7071)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--no-timers", action="store_true", help="do not fire timers on their schedule")
    args = parser.parse_args(argv)
    try:
        # Settings first: the app may read them at import time, and they may set the log level.
        load_local_settings()
        configure_logging()
        ensure_dev_signing_key()
        host = DevHost(load_app(args.app), port=args.port, timers_enabled=not args.no_timers)
    except DevHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_foreground(host)


if __name__ == "__main__":
    sys.exit(main())
