"""Pydantic models: workflow definitions (a WDL subset), stored runs, and the API shapes.

Definitions are validated in two passes: the pydantic models check shape and types, then
:func:`validate_definition` checks what spans the document (the ``runAfter`` graph, the
expressions and what they reference). Both report every problem with its JSON path, so a
``PUT`` answers ``400`` once with the whole list.

Unknown keys are refused rather than ignored: a definition that uses a WDL feature Hookflow
does not implement should fail loudly at save time, not behave differently at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared import expressions
from shared.durations import format_duration, parse_duration
from shared.errors import DefinitionInvalid, ExpressionError
from shared.receivers import SignatureSpec

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
ACTION_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}$")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- definitions


class Authentication(_Strict):
    """The WDL ``authentication`` object of an HTTP request (Basic, Raw or managed identity)."""

    type: Literal["Basic", "Raw", "ManagedServiceIdentity"]
    username: str | None = None
    password: str | None = None
    value: str | None = None
    audience: str | None = None
    identity: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _canonical_type(cls, value: Any) -> Any:
        return _canonical(value, ("Basic", "Raw", "ManagedServiceIdentity"))

    @model_validator(mode="after")
    def _required_fields(self) -> Authentication:
        if self.type == "Basic" and (self.username is None or self.password is None):
            raise ValueError("Basic authentication needs 'username' and 'password'")
        if self.type == "Raw" and self.value is None:
            raise ValueError("Raw authentication needs 'value'")
        if self.type == "ManagedServiceIdentity" and self.audience is None:
            raise ValueError("ManagedServiceIdentity authentication needs 'audience'")
        return self


def _duration_text(value: str, *, minimum: timedelta = timedelta(0)) -> str:
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from exc
    if parsed < minimum:
        raise ValueError(f"{value!r} is shorter than {format_duration(minimum)}")
    return value


class RetryPolicy(_Strict):
    """WDL ``retryPolicy``. Logic Apps asks for intervals of at least 5 seconds; Hookflow
    accepts 1 second and up, so that short retries can be tried out and tested."""

    type: Literal["exponential", "fixed", "none"] = "exponential"
    count: int | None = Field(default=None, ge=1, le=90)
    interval: str | None = None
    minimum_interval: str | None = Field(default=None, alias="minimumInterval")
    maximum_interval: str | None = Field(default=None, alias="maximumInterval")

    @field_validator("type", mode="before")
    @classmethod
    def _canonical_type(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("interval", "minimum_interval", "maximum_interval")
    @classmethod
    def _durations(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _duration_text(value, minimum=timedelta(seconds=1))

    @model_validator(mode="after")
    def _fixed_needs_both(self) -> RetryPolicy:
        if self.type == "fixed" and (self.count is None or self.interval is None):
            raise ValueError("a fixed retry policy needs 'count' and 'interval'")
        return self


class HttpRequestSpec(_Strict):
    """An outbound request as written in a definition; strings may hold expressions."""

    method: str
    uri: str
    headers: dict[str, Any] | None = None
    queries: dict[str, Any] | None = None
    body: Any = None
    authentication: Authentication | None = None
    retry_policy: RetryPolicy | None = Field(default=None, alias="retryPolicy")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value.upper() not in HTTP_METHODS:
            raise ValueError(f"unsupported HTTP method {value!r}")
        return value.upper()


class UnsubscribeSpec(HttpRequestSpec):
    """``unsubscribe``: like a request, but older Logic Apps docs spell the address ``url``."""

    uri: str = ""
    url: str | None = None

    @model_validator(mode="after")
    def _uri_or_url(self) -> UnsubscribeSpec:
        if not self.uri:
            if not self.url:
                raise ValueError("unsubscribe needs 'uri' (or 'url')")
            self.uri = self.url
        self.url = None
        return self


class WebhookInputs(_Strict):
    subscribe: HttpRequestSpec
    unsubscribe: UnsubscribeSpec | None = None


class Limit(_Strict):
    """``limit``: how long an action may take (``timeout``) and, for a webhook action, how far
    a heartbeat callback pushes that deadline (``heartbeat``). ISO 8601 durations."""

    timeout: str | None = None
    heartbeat: str | None = None

    @field_validator("timeout", "heartbeat")
    @classmethod
    def _durations(cls, value: str | None) -> str | None:
        return None if value is None else _duration_text(value, minimum=timedelta(seconds=1))


RunAfterStatus = Literal["Succeeded", "Failed", "Skipped", "TimedOut"]


class _ActionBase(_Strict):
    run_after: dict[str, list[RunAfterStatus]] = Field(default_factory=dict, alias="runAfter")
    description: str | None = None
    metadata: dict[str, Any] | None = None
    limit: Limit | None = None

    @field_validator("run_after", mode="before")
    @classmethod
    def _canonical_statuses(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: [_canonical(s, ("Succeeded", "Failed", "Skipped", "TimedOut")) for s in v]
                if isinstance(v, list)
                else v
                for k, v in value.items()
            }
        return value

    @field_validator("run_after")
    @classmethod
    def _non_empty_statuses(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, statuses in value.items():
            if not statuses:
                raise ValueError(f"runAfter of {name!r} lists no status")
        return value

    @property
    def timeout(self) -> timedelta | None:
        return parse_duration(self.limit.timeout) if self.limit and self.limit.timeout else None


class HttpAction(_ActionBase):
    """Calls a URL and records ``statusCode``, ``headers`` and ``body``.

    A ``202`` with a ``Location`` starts the asynchronous polling pattern unless
    ``operationOptions`` is ``DisableAsyncPattern``.
    """

    type: Literal["Http"]
    inputs: HttpRequestSpec
    operation_options: str | None = Field(default=None, alias="operationOptions")

    @field_validator("operation_options")
    @classmethod
    def _known_options(cls, value: str | None) -> str | None:
        if value is None:
            return None
        options = {o.strip().lower() for o in value.split(",") if o.strip()}
        if options - {"disableasyncpattern"}:
            raise ValueError("the only operationOptions supported is DisableAsyncPattern")
        return value

    @property
    def async_pattern(self) -> bool:
        return "disableasyncpattern" not in (self.operation_options or "").lower()


class HttpWebhookAction(_ActionBase):
    """Subscribes with a callback URL, waits for the callback, unsubscribes."""

    type: Literal["HttpWebhook"]
    inputs: WebhookInputs
    # Hookflow: how the target signs its callbacks, on top of the callback URL's own signature.
    signature: SignatureSpec | None = None

    @property
    def heartbeat(self) -> timedelta | None:
        return parse_duration(self.limit.heartbeat) if self.limit and self.limit.heartbeat else None


# The units of Wait actions and trigger recurrences. A month is 30 days, as in durations.
TIME_UNITS = {
    "Second": timedelta(seconds=1),
    "Minute": timedelta(minutes=1),
    "Hour": timedelta(hours=1),
    "Day": timedelta(days=1),
    "Week": timedelta(weeks=1),
    "Month": timedelta(days=30),
}


def _time_unit(value: Any, what: str) -> Any:
    canonical = _canonical(value, tuple(TIME_UNITS))
    if canonical not in TIME_UNITS:
        raise ValueError(f"{what} must be one of {', '.join(TIME_UNITS)}")
    return canonical


class WaitInterval(_Strict):
    count: int = Field(ge=0)
    unit: str

    @field_validator("unit", mode="before")
    @classmethod
    def _canonical_unit(cls, value: Any) -> Any:
        return _time_unit(value, "unit")


class WaitUntil(_Strict):
    timestamp: str

    @field_validator("timestamp")
    @classmethod
    def _iso_timestamp(cls, value: str) -> str:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from exc
        if parsed.tzinfo is None:
            raise ValueError("the timestamp needs a time zone (for example a trailing Z)")
        return value


class WaitInputs(_Strict):
    interval: WaitInterval | None = None
    until: WaitUntil | None = None

    @model_validator(mode="after")
    def _one_of(self) -> WaitInputs:
        if (self.interval is None) == (self.until is None):
            raise ValueError("a Wait action needs exactly one of 'interval' and 'until'")
        return self

    def due(self, start: datetime) -> datetime:
        if self.interval is not None:
            return start + self.interval.count * TIME_UNITS[self.interval.unit]
        assert self.until is not None
        return datetime.fromisoformat(self.until.timestamp.replace("Z", "+00:00")).astimezone(UTC)


class WaitAction(_ActionBase):
    """A delay: waits for an interval or until a point in time."""

    type: Literal["Wait"]
    inputs: WaitInputs


Action = Annotated[HttpAction | HttpWebhookAction | WaitAction, Field(discriminator="type")]


class RequestTriggerInputs(_Strict):
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    method: str | None = None


class Concurrency(_Strict):
    runs: int = Field(ge=1, le=100)


class RuntimeConfiguration(_Strict):
    """``runtimeConfiguration.concurrency.runs``: at most this many runs in progress."""

    concurrency: Concurrency | None = None


class _TriggerBase(_Strict):
    description: str | None = None
    metadata: dict[str, Any] | None = None
    runtime_configuration: RuntimeConfiguration | None = Field(default=None, alias="runtimeConfiguration")
    # Hookflow: how inbound calls to this trigger's URL are signed (GitHub, Standard Webhooks, HMAC).
    signature: SignatureSpec | None = None

    @property
    def max_runs(self) -> int | None:
        config = self.runtime_configuration
        return config.concurrency.runs if config and config.concurrency else None


class RequestTrigger(_TriggerBase):
    """The manual trigger: a run starts for each ``POST .../runs`` or POST to its signed URL."""

    type: Literal["Request"]
    kind: str = "Http"
    inputs: RequestTriggerInputs = Field(default_factory=RequestTriggerInputs)


class HttpWebhookTrigger(_TriggerBase):
    """Subscribes while the workflow is enabled; every POST to its callback URL starts a run."""

    type: Literal["HttpWebhook"]
    inputs: WebhookInputs


class Recurrence(_Strict):
    frequency: str
    interval: int = Field(default=1, ge=1)

    @field_validator("frequency", mode="before")
    @classmethod
    def _canonical_frequency(cls, value: Any) -> Any:
        return _time_unit(value, "frequency")

    @property
    def period(self) -> timedelta:
        return self.interval * TIME_UNITS[self.frequency]


class HttpTrigger(_TriggerBase):
    """A polling trigger: the timer calls ``inputs`` every ``recurrence``; ``200`` starts a run."""

    type: Literal["Http"]
    inputs: HttpRequestSpec
    recurrence: Recurrence


Trigger = Annotated[RequestTrigger | HttpWebhookTrigger | HttpTrigger, Field(discriminator="type")]

ACTION_TYPES = ("Http", "HttpWebhook", "Wait")
TRIGGER_TYPES = ("Request", "HttpWebhook", "Http")


class WorkflowDefinition(_Strict):
    """A workflow definition: exactly one trigger and a DAG of actions."""

    schema_uri: str | None = Field(default=None, alias="$schema")
    content_version: str | None = Field(default=None, alias="contentVersion")
    triggers: dict[str, Trigger]
    actions: dict[str, Action] = Field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None

    @field_validator("triggers", mode="before")
    @classmethod
    def _canonical_trigger_types(cls, value: Any) -> Any:
        return _canonical_types(value, TRIGGER_TYPES)

    @field_validator("actions", mode="before")
    @classmethod
    def _canonical_action_types(cls, value: Any) -> Any:
        return _canonical_types(value, ACTION_TYPES)

    @property
    def trigger_name(self) -> str:
        return next(iter(self.triggers))


class WorkflowState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"


class WorkflowPut(_Strict):
    """Body of ``PUT /api/workflows/{name}``."""

    definition: WorkflowDefinition
    state: WorkflowState = WorkflowState.ENABLED

    @field_validator("state", mode="before")
    @classmethod
    def _canonical_state(cls, value: Any) -> Any:
        return _canonical(value, ("Enabled", "Disabled"))


def _canonical(value: Any, choices: tuple[str, ...]) -> Any:
    """WDL keywords are case-insensitive; store the documented spelling."""
    if isinstance(value, str):
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
    return value


def _canonical_types(value: Any, choices: tuple[str, ...]) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(item, dict) and "type" in item:
            item = {**item, "type": _canonical(item["type"], choices)}
        out[name] = item
    return out


# --------------------------------------------------------------------------- validation


def parse_workflow_put(body: Any) -> WorkflowPut:
    """Validate a ``PUT`` body; raise :class:`DefinitionInvalid` listing every problem.

    The shape checks (pydantic) and the cross-document checks both run on every body, so
    one answer lists every problem, whichever pass found it.
    """
    if not isinstance(body, dict):
        raise DefinitionInvalid(
            "the body must be a JSON object with a 'definition'",
            details=[{"path": "$", "message": "expected an object"}],
        )
    problems: list[dict[str, str]] = []
    put: WorkflowPut | None = None
    try:
        put = WorkflowPut.model_validate(body)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, body)
    for problem in validate_definition(body.get("definition"), "$.definition"):
        if problem not in problems:
            problems.append(problem)
    if problems or put is None:
        raise DefinitionInvalid("the workflow definition is invalid", details=problems)
    return put


def validate_definition(raw: Any, root: str) -> list[dict[str, str]]:
    """Cross-document checks on the raw JSON: one trigger, a runAfter DAG, expressions and
    what they reference. Written against raw JSON so that it also runs on a definition
    whose shape is wrong, and reports alongside the shape problems."""
    problems: list[dict[str, str]] = []

    def add(path: str, message: str) -> None:
        problems.append({"path": path, "message": message})

    if not isinstance(raw, dict):
        return problems  # the shape pass reports it
    triggers = raw.get("triggers")
    if isinstance(triggers, dict) and len(triggers) != 1:
        add(f"{root}.triggers", f"a workflow has exactly one trigger, found {len(triggers)}")
    raw_actions = raw.get("actions")
    actions: dict[str, Any] = raw_actions if isinstance(raw_actions, dict) else {}
    graph: dict[str, list[str]] = {}
    for name, action in actions.items():
        if not ACTION_NAME_PATTERN.match(name):
            add(_path(root, "actions", name), "action names hold letters, digits, '_', '.', '-' (at most 80)")
        after = action.get("runAfter") if isinstance(action, dict) else None
        graph[name] = []
        for dep in after if isinstance(after, dict) else {}:
            if dep not in actions:
                add(_path(root, "actions", name, "runAfter", dep), f"runAfter names an unknown action {dep!r}")
            elif dep == name:
                add(_path(root, "actions", name, "runAfter", dep), "an action cannot run after itself")
            else:
                graph[name].append(dep)

    cycle = _find_cycle(graph)
    if cycle:
        add(_path(root, "actions"), "runAfter forms a cycle: " + " -> ".join(cycle))
    ancestors = None if cycle else _ancestors(graph)

    for name, action in actions.items():
        if not isinstance(action, dict):
            continue
        base = _path(root, "actions", name, "inputs")
        inputs = action.get("inputs")
        for path, message in expressions.find_problems(inputs, base):
            add(path, message)
        for path, text in _strings(inputs, base):
            try:
                refs = expressions.compile_value(text).references()
            except ExpressionError:
                continue  # reported by find_problems
            for ref in sorted(refs.actions):
                if ref not in actions:
                    add(path, f"the expression refers to an unknown action {ref!r}")
                elif ancestors is not None and ref not in ancestors[name]:
                    add(
                        path,
                        f"the expression refers to {ref!r}, which does not run before {name!r} (add it to runAfter)",
                    )
            if "listcallbackurl" in refs.functions and str(action.get("type", "")).lower() != "httpwebhook":
                add(path, "listCallbackUrl() is only valid inside an HttpWebhook action")

    for tname, trigger in triggers.items() if isinstance(triggers, dict) else ():
        if not isinstance(trigger, dict) or str(trigger.get("type", "")).lower() == "request":
            continue  # a Request trigger's inputs are a JSON schema, not expressions
        tbase = _path(root, "triggers", tname, "inputs")
        inputs = trigger.get("inputs")
        for path, message in expressions.find_problems(inputs, tbase):
            add(path, message)
        for path, text in _strings(inputs, tbase):
            try:
                refs = expressions.compile_value(text).references()
            except ExpressionError:
                continue
            if refs.functions & {"body", "outputs", "triggerbody", "triggeroutputs"}:
                add(path, "a trigger's inputs cannot refer to run data: no run exists when it calls out")
            if "listcallbackurl" in refs.functions and str(trigger.get("type", "")).lower() != "httpwebhook":
                add(path, "listCallbackUrl() is only valid inside an HttpWebhook trigger or action")
    return problems


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield from _strings(item, _path(path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, _path(path, index))


def _ancestors(graph: dict[str, list[str]]) -> dict[str, set[str]]:
    memo: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in memo:
            found: set[str] = set()
            for dep in graph[name]:
                found.add(dep)
                found |= visit(dep)
            memo[name] = found
        return memo[name]

    for name in graph:
        visit(name)
    return memo


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := dfs(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := dfs(node)):
            return found
    return None


def topological_order(definition: WorkflowDefinition) -> list[str]:
    """Actions in an order where every action follows its runAfter dependencies.

    Ties keep the definition's own order, so runs are deterministic and readable.
    """
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(definition.actions)
    while remaining:
        for name in remaining:
            if all(dep in placed for dep in definition.actions[name].run_after):
                order.append(name)
                placed.add(name)
                remaining.remove(name)
                break
        else:  # pragma: no cover - validate_definition refuses cycles
            raise ValueError("runAfter graph has a cycle")
    return order


def _path(root: str, *parts: str | int) -> str:
    out = root
    for part in parts:
        out = expressions.join_path(out, part)
    return out


def _pydantic_problems(exc: ValidationError, body: Any) -> list[dict[str, str]]:
    """Turn pydantic errors into ``{"path", "message"}`` with JSON paths into the *input*.

    Pydantic adds discriminator tags and validator names to ``loc``; walking the input
    alongside keeps only the keys that are really there, so paths point at the user's JSON.
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        parts: list[str | int] = []
        node: Any = body
        for item in error["loc"]:
            in_dict = isinstance(node, dict) and item in node
            in_list = isinstance(node, list) and isinstance(item, int) and item < len(node)
            if in_dict or in_list:
                parts.append(item)
                node = node[item]
            elif isinstance(node, dict) and isinstance(item, str) and error["type"] == "missing":
                parts.append(item)
                node = None
            # anything else is a tag pydantic added (union member, validator), not a key
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown or unsupported property"
        elif error["type"] == "union_tag_invalid":
            ctx = error.get("ctx", {})
            parts.append("type")
            message = f"unsupported type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append({"path": _path("$", *parts), "message": message})
    return problems


# --------------------------------------------------------------------------- runs


class RunStatus(StrEnum):
    RUNNING = "Running"
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"

    @property
    def ended(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.WAITING)


class ActionStatus(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    TIMED_OUT = "TimedOut"
    CANCELLED = "Cancelled"

    @property
    def final(self) -> bool:
        return self not in (ActionStatus.PENDING, ActionStatus.RUNNING, ActionStatus.WAITING)


class ErrorInfo(BaseModel):
    code: str
    message: str


class WaitRecord(BaseModel):
    """The state of one webhook wait. The nonce makes its callback URL unique to this wait."""

    nonce: str
    subscribed: bool = False
    subscribe_status: int | None = None
    subscribe_error: ErrorInfo | None = None
    callback_at: datetime | None = None
    callback_id: str | None = None  # which callback resumed the wait (told apart from a retry of it)
    heartbeat_at: datetime | None = None
    # "owed" is set by the write that ends a subscribed wait; the unsubscribe call follows
    # that write. At the end of a run a successful call is not written back: the run's alarm
    # is deleted instead, and nothing looks at an ended run that has no alarm.
    unsubscribe: Literal["owed", "done", "failed"] | None = None
    unsubscribe_attempts: int = 0
    unsubscribe_next_at: datetime | None = None
    unsubscribe_error: ErrorInfo | None = None


class Step(StrEnum):
    """What an action waits for the clock to do next."""

    SUBSCRIBE = "subscribe"  # call (or call again) the webhook's subscribe
    POLL = "poll"  # poll the Location of an asynchronous (202) Http action
    RETRY = "retry"  # send an Http action's request again
    DELAY = "delay"  # a Wait action's time


class PollRecord(BaseModel):
    location: str


class ActionRecord(BaseModel):
    status: ActionStatus = ActionStatus.PENDING
    start_time: datetime | None = None
    end_time: datetime | None = None
    inputs: Any = None
    outputs: Any = None
    error: ErrorInfo | None = None
    attempts: int = 0
    wait: WaitRecord | None = None
    # The clock's part: when the action times out, and which step is due when.
    deadline: datetime | None = None
    step: Step | None = None
    next_at: datetime | None = None
    failures: int = 0  # consecutive failed attempts of the current step, for the retry policy
    poll: PollRecord | None = None


class TriggerRecord(BaseModel):
    name: str
    outputs: dict[str, Any]


class RunRecord(BaseModel):
    """A run as stored. The definition and trigger outputs are written once, at creation."""

    id: str
    workflow: str
    status: RunStatus = RunStatus.RUNNING
    start_time: datetime
    end_time: datetime | None = None
    error: ErrorInfo | None = None
    trigger: TriggerRecord
    actions: dict[str, ActionRecord] = Field(default_factory=dict)
    client_tracking_id: str
    # Callback URLs are built from this, so a URL stays the same for the life of its wait.
    base_url: str
    # The single advancer: whoever holds an unexpired lease runs the actions; anyone else
    # (a callback arriving meanwhile) only records what it brought.
    lease_owner: str | None = None
    lease_until: datetime | None = None
    # The due time of this run's alarm (its one entry in the due-item index), if any.
    alarm_at: datetime | None = None

    def lease_free(self, now: datetime, owner: str) -> bool:
        return self.lease_owner in (None, owner) or self.lease_until is None or self.lease_until <= now
