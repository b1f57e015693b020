"""The clock's side of the engine: timeouts, cancel, async polling, retries, delays,
heartbeats, the sweep of due items, and recovery after a crash at any persistence point.

Time only moves when a test moves the :class:`FakeClock`; the timer is ``engine.sweep()``.
Crashes are injected with ``MemoryStore.before_submit`` (a storage write that fails) and with
outbound handlers that raise something the engine does not expect (the process dying in the
middle of a call); recovery is then left to the sweep once the crashed holder's lease is over.

Two checks run through the file:

* the alarm rule: a run that is not over always has its alarm in the due-item index, at or
  before the next moment it needs the clock, and that item is written *before* the run state
  that depends on it (every ``create_run``/``save_run`` is watched);
* call counts: ``subscribe``/``unsubscribe`` are made once, and again only when a crash fell
  between the call and the write that records it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from shared.engine import Engine, SweepReport, render_run
from shared.errors import Conflict, Gone
from shared.models import ActionStatus, RetryPolicy, RunRecord, RunStatus, WaitRecord
from shared.outbound import OutboundError, OutboundRequest, OutboundResponse
from shared.retry import Policy, retry_after, retryable_status
from shared.signing import CallbackSigner
from shared.store import LoadedRun, MemoryStore
from shared.store.base import DueItem, Op, due_keys
from shared.triggers import Workflows
from tests.unit.builders import (
    SUBSCRIBE_URI,
    TARGET,
    UNSUBSCRIBE_URI,
    CallbackAddress,
    callback_request,
    definition,
    http_action,
    inbound,
    parse_callback_url,
    put_body,
    webhook_action,
)
from tests.unit.fakes import EPOCH, FakeClock, FakeSender, respond

MAX_BODY = 4096
SIGNING_KEY = b"unit-test-timer-key"
LEASE = timedelta(minutes=5)
FOREVER = timedelta(days=3650)
API = f"{TARGET}/api"

Rand = Callable[[float, float], float]


def lowest(low: float, high: float) -> float:
    """Retry jitter that always picks the bottom of the range, so waits are predictable."""
    return low


def fixed(count: int, interval: str) -> dict[str, Any]:
    return {"type": "fixed", "count": count, "interval": interval}


def wait_action(
    *,
    count: int | None = None,
    unit: str = "Second",
    until: str | None = None,
    run_after: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A ``Wait`` (delay) action: ``count`` ``unit``s, or ``until`` a timestamp."""
    inputs: dict[str, Any] = {"until": {"timestamp": until}} if until is not None else {}
    if count is not None:
        inputs["interval"] = {"count": count, "unit": unit}
    action: dict[str, Any] = {"type": "Wait", "inputs": inputs}
    if run_after is not None:
        action["runAfter"] = run_after
    return action


def policy_of(spec: dict[str, Any]) -> Policy:
    """The effective policy of a ``retryPolicy`` as written in a definition."""
    return Policy.of(RetryPolicy.model_validate(spec))


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _kind(table: str) -> str:
    """Which of the store's tables a name is: the due index is one table per day."""
    name = table.removeprefix("hookflow")
    return "due" if name.startswith("due") else name


class StorageDown(RuntimeError):
    """A storage write that fails (the process may die right after it)."""


class ProcessDied(RuntimeError):
    """The process dying in the middle of an outbound call."""


# --------------------------------------------------------------------------- the harness


@dataclass
class Harness:
    """An engine on in-memory adapters whose run writes are checked against the alarm rule."""

    store: MemoryStore
    sender: FakeSender
    clock: FakeClock
    engine: Engine
    # Writes of run state whose alarm was not in the index yet (must stay empty).
    violations: list[str] = field(default_factory=list)

    # -- setting up and driving

    def save(self, actions: dict[str, Any], name: str = "wf") -> None:
        Workflows(self.engine).put(name, put_body(definition(actions)))

    def start(self, body: Any = None, *, idempotency_key: str | None = None) -> RunRecord:
        return self.engine.start_run("wf", inbound({} if body is None else body), idempotency_key=idempotency_key)

    def at(self, seconds: float) -> datetime:
        """Move the clock to ``seconds`` after the epoch the tests start at (never backwards)."""
        when = EPOCH + timedelta(seconds=seconds)
        assert when >= self.clock.now, "the clock never goes back"
        self.clock.now = when
        return when

    def sweep_at(self, seconds: float, **kwargs: Any) -> SweepReport:
        self.at(seconds)
        return self.engine.sweep(**kwargs)

    def past_lease(self) -> None:
        """Let every lease and every claim taken so far run out."""
        self.clock.now += self.engine.lease + timedelta(seconds=1)

    # -- webhooks

    def subscribes(self, uri: str = SUBSCRIBE_URI) -> list[OutboundRequest]:
        return self.sender.to(uri)

    def unsubscribes(self, uri: str = UNSUBSCRIBE_URI) -> list[OutboundRequest]:
        return self.sender.to(uri)

    def address(self, uri: str = SUBSCRIBE_URI) -> CallbackAddress:
        """The callback URL handed to the target in the latest subscribe sent to ``uri``."""
        calls = self.subscribes(uri)
        assert calls, f"nothing was subscribed at {uri}"
        body = calls[-1].body
        assert isinstance(body, dict)
        return parse_callback_url(body["callbackUrl"])

    def callback_urls_sent(self, uri: str = SUBSCRIBE_URI) -> set[str]:
        return {r.body["callbackUrl"] for r in self.subscribes(uri) if isinstance(r.body, dict)}

    def call_back(
        self, address: CallbackAddress, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> RunRecord:
        request = callback_request(address, {"approved": True} if body is None else body, headers=headers)
        return self.engine.receive_action_callback(address.run_id, address.action, address.query, request)

    def heartbeat(self, address: CallbackAddress) -> RunRecord:
        return self.call_back(address, {"progress": 50}, headers={"x-hookflow-heartbeat": "true"})

    # -- looking at storage

    def stored(self, run_id: str) -> RunRecord:
        loaded = self.store.load_run(run_id)
        assert loaded is not None
        return loaded.run

    def runs(self) -> list[RunRecord]:
        summaries, _ = self.store.list_runs("wf", status=None, top=1000, continuation=None)
        return [self.stored(s.id) for s in summaries]

    def snapshot(self, run_id: str) -> tuple[str, dict[str, Any]]:
        loaded = self.store.load_run(run_id)
        assert loaded is not None
        return loaded.etag, loaded.run.model_dump(mode="json")

    def rendered(self, run_id: str) -> dict[str, Any]:
        return render_run(self.stored(run_id))

    def items(self, run_id: str | None = None) -> list[DueItem]:
        """Every due item however far ahead (read without counting as a transaction)."""
        spent = self.store.transactions
        items = self.store.due_items(self.clock.now + FOREVER, 100_000)
        self.store.transactions = spent
        return [i for i in items if run_id is None or i.run_id == run_id]


def watch_run_writes(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every run write whose alarm is not already in the index, or that has none."""
    create_run, save_run = h.store.create_run, h.store.save_run

    def check(run: RunRecord, what: str) -> None:
        if run.alarm_at is not None and due_keys(run.id, run.alarm_at) not in {i.keys for i in h.items(run.id)}:
            h.violations.append(f"{what} of a {run.status.value} run before its alarm at {run.alarm_at} existed")
        if not run.status.ended and run.alarm_at is None:
            h.violations.append(f"{what} of a {run.status.value} run without an alarm")

    # Checked once the write has landed: a write refused for a stale ETag never stored anything,
    # and the index does not change while a write is made.
    def create(run: RunRecord, definition_: Any) -> LoadedRun:
        stored = create_run(run, definition_)
        check(run, "create")
        return stored

    def save(loaded: LoadedRun, run: RunRecord) -> LoadedRun:
        stored = save_run(loaded, run)
        check(run, "save")
        return stored

    monkeypatch.setattr(h.store, "create_run", create)
    monkeypatch.setattr(h.store, "save_run", save)


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeHarness]:
    """Builds harnesses; at the end, no run was ever written before the alarm it depends on."""
    built: list[Harness] = []

    def build(*, rand: Rand = lowest, **engine_kwargs: Any) -> Harness:
        store, sender, clock = MemoryStore(), FakeSender(), FakeClock()
        engine = Engine(
            store,
            sender,
            CallbackSigner([SIGNING_KEY]),
            max_body_bytes=MAX_BODY,
            clock=clock,
            lease=LEASE,
            rand=rand,
            **engine_kwargs,
        )
        harness = Harness(store=store, sender=sender, clock=clock, engine=engine)
        watch_run_writes(harness, monkeypatch)
        built.append(harness)
        return harness

    yield build
    for harness in built:
        assert harness.violations == [], "run state was written before the alarm it depends on"


@pytest.fixture
def h(make: MakeHarness) -> Harness:
    return make()


# --------------------------------------------------------------------------- checks


def _next_need(run: RunRecord) -> datetime | None:
    """The next moment the run needs the clock, as its stored state says."""
    times: list[datetime] = []
    for record in run.actions.values():
        if record.status in (ActionStatus.WAITING, ActionStatus.RUNNING):
            times += [t for t in (record.deadline, record.next_at) if t is not None]
        wait = record.wait
        if wait is not None and wait.unsubscribe == "owed" and wait.unsubscribe_next_at is not None:
            times.append(wait.unsubscribe_next_at)
    return min(times) if times else None


def check_alarms(h: Harness) -> None:
    """The alarm rule, for every run in the store.

    A run that is not over (or that still has an unsubscribe retry ahead) has its alarm in the
    index, at or before the next moment it needs the clock (a live lease may postpone that: its
    holder is at work). Any other item of a run is an orphan, which the sweep only deletes.
    """
    assert h.violations == []
    for run in h.runs():
        keys = {i.keys for i in h.items(run.id)}
        need = _next_need(run)
        if not run.status.ended or need is not None:
            assert run.alarm_at is not None, f"{run.status.value} run {run.id} has no alarm"
            assert due_keys(run.id, run.alarm_at) in keys, f"{run.status.value} run {run.id}: its alarm is missing"
            lease_live = run.lease_owner is not None and run.lease_until is not None and run.lease_until > h.clock.now
            if need is not None and not lease_live:
                assert run.alarm_at <= need, f"run {run.id}: alarm {run.alarm_at} is after {need}"


def check_settled(h: Harness, run_id: str) -> None:
    """An ended run with nothing left to do: whatever items it left are orphans, and a sweep
    far in the future removes them without calling anything."""
    run = h.stored(run_id)
    assert run.status.ended
    alarm = due_keys(run.id, run.alarm_at) if run.alarm_at is not None else None
    assert [i for i in h.items(run_id) if i.keys == alarm] == [], "an ended run still has a live alarm"
    sent = len(h.sender.requests)
    h.clock.now += FOREVER
    h.engine.sweep(batch=10_000)
    assert h.items(run_id) == []
    assert len(h.sender.requests) == sent
    assert h.stored(run_id).status == run.status


def wait_of(run: RunRecord, action: str) -> WaitRecord:
    wait = run.actions[action].wait
    assert wait is not None
    return wait


# --------------------------------------------------------------------------- crash tools


class CrashOnWrite:
    """A ``MemoryStore.before_submit`` hook: the ``n``-th storage write from now fails, once.

    It also remembers which outbound calls had not been recorded by a write when it fired
    (calls made after the last run write or due-item delete): only those may be made again.
    """

    def __init__(self, n: int, sender: FakeSender) -> None:
        self.n = n
        self.sender = sender
        self.seen = 0
        self.fired: str | None = None
        self.unrecorded: list[OutboundRequest] = []
        self._recorded_upto = 0

    def __call__(self, table: str, ops: Sequence[Op]) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.fired = f"{table}: {', '.join(op.kind for op in ops)}"
            self.unrecorded = self.sender.requests[self._recorded_upto :]
            raise StorageDown(f"storage failed on write {self.n} ({self.fired})")
        if table.endswith("runs") or any(op.kind == "delete" for op in ops):
            self._recorded_upto = len(self.sender.requests)

    def redone(self, url: str) -> int:
        """How many calls to ``url`` the crash left unrecorded (0 or 1)."""
        return sum(1 for r in self.unrecorded if r.url.split("?", 1)[0] == url)


def recover(h: Harness, rounds: int = 2) -> None:
    """What the timer does after a crash: wait for leases and claims to run out, and sweep
    (a sweep may itself meet the failing store; the next one picks its items up)."""
    for _ in range(rounds):
        h.past_lease()
        with suppress(StorageDown):
            h.engine.sweep()


def start_until_accepted(h: Harness, key: str = "order-1") -> None:
    """A client that retries a failed start with the same ``Idempotency-Key``."""
    for _ in range(3):
        with suppress(StorageDown):
            h.start(idempotency_key=key)
            return
    pytest.fail("start never succeeded")


def call_back_until_accepted(h: Harness, uri: str = SUBSCRIBE_URI) -> None:
    """A target that retries its callback after a 500, until it is accepted (or already was)."""
    for _ in range(3):
        try:
            h.call_back(h.address(uri))
        except StorageDown:
            recover(h, rounds=1)
            continue
        except Conflict:
            return
        return
    pytest.fail("the callback was never accepted")


@dataclass
class DiesOnce:
    """An outbound handler: the first call kills the process (before or after the target got
    it); later calls get ``answer``. ``delivered`` lists the calls the target really received."""

    answer: OutboundResponse
    after_delivery: bool
    delivered: list[OutboundRequest] = field(default_factory=list)
    died: bool = False

    def __call__(self, request: OutboundRequest) -> OutboundResponse:
        if not self.died:
            self.died = True
            if self.after_delivery:
                self.delivered.append(request)
            raise ProcessDied(f"the process died while calling {request.url}")
        self.delivered.append(request)
        return self.answer


def sequence(*answers: OutboundResponse | OutboundError) -> Callable[[OutboundRequest], OutboundResponse]:
    """A handler that gives ``answers`` in turn, then repeats the last one."""
    queue = list(answers)

    def answer(_request: OutboundRequest) -> OutboundResponse:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, OutboundError):
            raise item
        return item

    return answer


def refused() -> OutboundError:
    return OutboundError("ConnectionFailed", "could not connect to target.example")


# =========================================================================== retry policy


class TestRetryPolicy:
    """``shared.retry.Policy`` against the Logic Apps documentation."""

    def test_default_policy_is_exponential_four_retries_of_seven_seconds(self) -> None:
        """No ``retryPolicy`` means exponential: 4 retries, interval 7 s, minimum 5 s, maximum 1 h."""
        policy = Policy.of(None)

        assert (policy.kind, policy.count) == ("exponential", 4)
        assert policy.interval == timedelta(seconds=7)
        assert policy.minimum == timedelta(seconds=5)
        assert policy.maximum == timedelta(hours=1)
        assert Policy.of(RetryPolicy()) == policy
        assert policy.delay(5) is None

    @pytest.mark.parametrize(
        ("retry", "low", "high"),
        [(1, 5, 7), (2, 7, 14), (3, 14, 28), (4, 28, 56)],
    )
    def test_default_exponential_waits_span_the_documented_range(self, retry: int, low: float, high: float) -> None:
        """Retry n waits between max(2^(n-2)*7 s, 5 s) and min(2^(n-1)*7 s, 1 h) (retry 1: 5 s to 7 s)."""
        policy = Policy.of(None)

        assert policy.delay(retry, lambda lo, hi: lo) == timedelta(seconds=low)
        assert policy.delay(retry, lambda lo, hi: hi) == timedelta(seconds=high)

    def test_random_exponential_waits_stay_in_the_documented_ranges(self) -> None:
        """With real jitter, every wait of a long exponential policy falls inside its documented range."""
        policy = policy_of(
            {
                "type": "exponential",
                "count": 7,
                "interval": "PT10S",
                "minimumInterval": "PT8S",
                "maximumInterval": "PT10M",
            }
        )
        rng = random.Random(1234)
        for retry in range(1, 8):
            if retry == 1:
                low, high = 8.0, 10.0
            else:
                low = max(2 ** (retry - 2) * 10.0, 8.0)
                high = min(2 ** (retry - 1) * 10.0, 600.0)
            for _ in range(50):
                delay = policy.delay(retry, rng.uniform)
                assert delay is not None
                assert low <= delay.total_seconds() <= high, (retry, delay)
        assert policy.delay(8, rng.uniform) is None

    def test_exponential_wait_never_exceeds_the_maximum_interval(self) -> None:
        """However many retries a policy allows, no wait is longer than its ``maximumInterval``."""
        for policy in (
            policy_of({"type": "exponential", "count": 20}),
            policy_of({"type": "exponential", "count": 10, "interval": "PT1M", "maximumInterval": "PT5M"}),
        ):
            for retry in range(1, policy.count + 1):
                for pick in (lambda lo, hi: lo, lambda lo, hi: hi):
                    delay = policy.delay(retry, pick)
                    assert delay is not None
                    assert delay <= policy.maximum, f"retry {retry} waits {delay}, over {policy.maximum}"

    def test_minimum_interval_raises_the_shortest_wait(self) -> None:
        """``minimumInterval`` is the floor of the first wait."""
        policy = policy_of({"type": "exponential", "count": 3, "interval": "PT20S", "minimumInterval": "PT15S"})

        assert policy.delay(1, lambda lo, hi: lo) == timedelta(seconds=15)
        assert policy.delay(1, lambda lo, hi: hi) == timedelta(seconds=20)

    def test_fixed_policy_waits_its_interval_count_times(self) -> None:
        """A fixed policy waits ``interval`` before each of its ``count`` retries, then gives up."""
        policy = policy_of(fixed(3, "PT30S"))

        assert [policy.delay(n) for n in (1, 2, 3)] == [timedelta(seconds=30)] * 3
        assert policy.delay(4) is None

    def test_none_policy_never_retries(self) -> None:
        """``none`` means the first failure is final."""
        assert policy_of({"type": "none"}).delay(1) is None

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
    def test_timeouts_throttling_and_server_errors_are_retried(self, status: int) -> None:
        """408, 429 and every 5xx are worth another attempt."""
        assert retryable_status(status)

    @pytest.mark.parametrize("status", [200, 202, 301, 400, 401, 403, 404, 409, 410, 422])
    def test_other_statuses_are_not_retried(self, status: int) -> None:
        """Success, redirects and client errors other than 408/429 are final."""
        assert not retryable_status(status)

    def test_retry_after_in_seconds(self) -> None:
        """``Retry-After: 30`` means thirty seconds, whatever the header's spelling."""
        assert retry_after({"Retry-After": "30"}, EPOCH) == timedelta(seconds=30)
        assert retry_after({"retry-after": " 7 "}, EPOCH) == timedelta(seconds=7)

    def test_retry_after_as_an_http_date(self) -> None:
        """``Retry-After`` as an HTTP date means the time until that date (never negative)."""
        later = format_datetime(EPOCH + timedelta(seconds=90), usegmt=True)
        earlier = format_datetime(EPOCH - timedelta(seconds=90), usegmt=True)

        assert retry_after({"Retry-After": later}, EPOCH) == timedelta(seconds=90)
        assert retry_after({"Retry-After": earlier}, EPOCH) == timedelta(0)

    def test_missing_or_unreadable_retry_after_is_ignored(self) -> None:
        """No header, or one that is neither seconds nor a date, gives no wait."""
        assert retry_after({}, EPOCH) is None
        assert retry_after({"Retry-After": "soon"}, EPOCH) is None


# =========================================================================== Http retries


class TestHttpRetries:
    def test_failed_attempt_waits_as_a_due_item_and_is_retried(self, h: Harness) -> None:
        """A 500 leaves the action ``Running`` with its retry due in the index; the sweep retries it."""
        h.save({"A": http_action(API, retry=fixed(3, "PT10S"))})
        h.sender.route(API, sequence(respond(500), respond(500), respond(200, {"done": True})))

        run = h.start()

        assert run.status == RunStatus.RUNNING
        record = h.stored(run.id).actions["A"]
        assert (record.status, record.attempts) == (ActionStatus.RUNNING, 1)
        assert record.next_at == EPOCH + timedelta(seconds=10)
        assert [i.due_at for i in h.items(run.id)] == [EPOCH + timedelta(seconds=10)]
        check_alarms(h)

        assert h.sweep_at(9).found == 0
        assert len(h.sender.requests) == 1
        h.sweep_at(11)
        assert len(h.sender.requests) == 2
        check_alarms(h)
        h.sweep_at(22)

        stored = h.rendered(run.id)
        assert stored["status"] == "Succeeded"
        assert stored["actions"]["A"]["attempts"] == 3
        assert stored["actions"]["A"]["outputs"]["body"] == {"done": True}
        assert stored["actions"]["A"]["error"] is None
        check_settled(h, run.id)

    def test_every_attempt_is_counted_and_the_last_error_kept(self, h: Harness) -> None:
        """When the retries run out the action fails showing all attempts and the last answer's error."""
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, sequence(respond(500), respond(502), respond(503, {"why": "maintenance"})))
        run = h.start()

        waiting = h.rendered(run.id)["actions"]["A"]
        assert waiting["attempts"] == 1
        assert waiting["error"]["code"] == "UnexpectedStatusCode"
        assert "500" in waiting["error"]["message"]

        h.sweep_at(11)
        h.sweep_at(22)

        stored = h.rendered(run.id)
        action = stored["actions"]["A"]
        assert action["status"] == "Failed"
        assert action["attempts"] == 3
        assert "503" in action["error"]["message"]
        assert action["outputs"]["statusCode"] == 503
        assert action["outputs"]["body"] == {"why": "maintenance"}
        assert (stored["status"], stored["error"]["code"]) == ("Failed", "ActionFailed")
        assert len(h.sender.requests) == 3
        check_settled(h, run.id)

    def test_default_policy_retries_four_times_with_exponential_waits(self, make: MakeHarness) -> None:
        """Without ``retryPolicy`` an Http action is retried 4 times, 5 s, 7 s, 14 s and 28 s apart at the low end."""
        asked: list[tuple[float, float]] = []

        def rand(low: float, high: float) -> float:
            asked.append((low, high))
            return low

        h = make(rand=rand)
        h.save({"A": http_action(API, retry=None)})
        h.sender.route(API, respond(500))
        run = h.start()

        waits = []
        for _ in range(4):
            record = h.stored(run.id).actions["A"]
            assert record.next_at is not None
            waits.append((record.next_at - h.clock.now).total_seconds())
            h.clock.now = record.next_at + timedelta(milliseconds=1)
            h.engine.sweep()

        assert waits == [5, 7, 14, 28]
        assert asked == [(5, 7), (7, 14), (14, 28), (28, 56)]
        action = h.rendered(run.id)["actions"]["A"]
        assert (action["status"], action["attempts"]) == ("Failed", 5)
        assert len(h.sender.requests) == 5

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_retried_statuses(self, h: Harness, status: int) -> None:
        """408, 429 and 5xx answers are tried again."""
        h.save({"A": http_action(API, retry=fixed(1, "PT10S"))})
        h.sender.route(API, sequence(respond(status), respond(200)))
        run = h.start()

        h.sweep_at(11)

        assert len(h.sender.requests) == 2
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
    def test_client_errors_are_not_retried(self, h: Harness, status: int) -> None:
        """Other 4xx answers fail the action at once, whatever the policy."""
        h.save({"A": http_action(API, retry=fixed(3, "PT10S"))})
        h.sender.route(API, respond(status))

        run = h.start()
        h.sweep_at(60)

        assert run.status == RunStatus.FAILED
        assert len(h.sender.requests) == 1
        assert h.rendered(run.id)["actions"]["A"]["attempts"] == 1
        assert h.items(run.id) == []

    def test_connection_errors_are_retried(self, h: Harness) -> None:
        """A call that gets no answer at all is tried again."""
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, sequence(refused(), respond(200, {"ok": 1})))
        run = h.start()

        assert h.rendered(run.id)["actions"]["A"]["error"]["code"] == "ConnectionFailed"
        h.sweep_at(11)

        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        assert len(h.sender.requests) == 2

    def test_retry_policy_none_fails_at_the_first_error(self, h: Harness) -> None:
        """``"type": "none"`` makes the first 500 final."""
        h.save({"A": http_action(API, retry={"type": "none"})})
        h.sender.route(API, respond(500))

        run = h.start()

        assert run.status == RunStatus.FAILED
        assert h.items(run.id) == []

    @pytest.mark.parametrize("status", [429, 503])
    def test_retry_after_on_429_and_503_sets_the_wait(self, h: Harness, status: int) -> None:
        """A ``Retry-After`` on 429/503 replaces the policy's wait before the next attempt."""
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, sequence(respond(status, headers={"Retry-After": "60"}), respond(200)))
        run = h.start()

        assert h.stored(run.id).actions["A"].next_at == EPOCH + timedelta(seconds=60)
        h.sweep_at(30)
        assert len(h.sender.requests) == 1
        h.sweep_at(61)

        assert len(h.sender.requests) == 2
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_retry_after_on_other_errors_is_not_honoured(self, h: Harness) -> None:
        """A ``Retry-After`` on a 500 does not change the policy's wait."""
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, sequence(respond(500, headers={"Retry-After": "600"}), respond(200)))
        run = h.start()

        assert h.stored(run.id).actions["A"].next_at == EPOCH + timedelta(seconds=10)

    def test_retry_waits_are_written_before_the_run(self, h: Harness) -> None:
        """The due item of a retry is stored before the run that waits on it."""
        writes: list[str] = []
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, respond(500))
        h.store.before_submit = lambda table, ops: writes.append(f"{_kind(table)}:{ops[0].kind}")

        h.start()

        assert writes[:2] == ["due:create", "runs:create"]


# =========================================================================== subscribe / unsubscribe retries


class TestSubscribeRetries:
    def test_failed_subscribe_is_retried_with_the_same_callback_url(self, h: Harness) -> None:
        """A subscribe answered 503 is retried by its policy, with the URL the first attempt carried."""
        h.save({"W": webhook_action(subscribe_retry=fixed(2, "PT10S"))})
        h.sender.route(SUBSCRIBE_URI, sequence(respond(503), respond(200)))
        run = h.start()

        waiting = h.stored(run.id)
        assert waiting.actions["W"].status == ActionStatus.WAITING
        assert wait_of(waiting, "W").subscribed is False
        check_alarms(h)
        h.sweep_at(11)

        assert len(h.subscribes()) == 2
        assert len(h.callback_urls_sent()) == 1
        assert wait_of(h.stored(run.id), "W").subscribed is True
        assert h.rendered(run.id)["actions"]["W"]["attempts"] == 2
        assert h.call_back(h.address()).status == RunStatus.SUCCEEDED
        assert len(h.unsubscribes()) == 1

    def test_subscribe_without_an_answer_is_retried(self, h: Harness) -> None:
        """A subscribe that cannot connect is retried too."""
        h.save({"W": webhook_action(subscribe_retry=fixed(1, "PT10S"))})
        h.sender.route(SUBSCRIBE_URI, sequence(refused(), respond(200)))
        run = h.start()

        h.sweep_at(11)

        assert wait_of(h.stored(run.id), "W").subscribed is True
        assert len(h.callback_urls_sent()) == 1

    def test_subscribe_that_keeps_failing_fails_the_action(self, h: Harness) -> None:
        """When its retries run out, subscribe fails the action and nothing is unsubscribed."""
        h.save({"W": webhook_action(subscribe_retry=fixed(1, "PT10S"))})
        h.sender.route(SUBSCRIBE_URI, respond(500))
        run = h.start()

        h.sweep_at(11)

        stored = h.rendered(run.id)
        assert stored["status"] == "Failed"
        assert stored["actions"]["W"]["error"]["code"] == "SubscribeFailed"
        assert len(h.subscribes()) == 2
        assert h.unsubscribes() == []
        check_settled(h, run.id)


class TestUnsubscribeRetries:
    def test_failed_unsubscribe_is_retried_until_it_succeeds(self, h: Harness) -> None:
        """A 500 from unsubscribe is retried by its policy on the timer; the run's outcome never changes."""
        h.save({"W": webhook_action(unsubscribe_retry=fixed(3, "PT10S"))})
        h.sender.route(UNSUBSCRIBE_URI, sequence(respond(500), respond(500), respond(200)))
        run = h.start()

        assert h.call_back(h.address()).status == RunStatus.SUCCEEDED
        assert len(h.unsubscribes()) == 1
        check_alarms(h)
        h.sweep_at(11)
        assert len(h.unsubscribes()) == 2
        check_alarms(h)
        h.sweep_at(22)

        assert len(h.unsubscribes()) == 3
        stored = h.rendered(run.id)
        assert stored["status"] == "Succeeded"
        assert stored["actions"]["W"]["status"] == "Succeeded"
        assert stored["actions"]["W"]["subscription"]["unsubscribeError"] is None
        check_settled(h, run.id)
        assert len(h.unsubscribes()) == 3

    def test_final_unsubscribe_failure_is_shown_and_changes_no_outcome(self, h: Harness) -> None:
        """An unsubscribe that fails after its retries is shown on the action; action and run still succeed."""
        h.save({"W": webhook_action(unsubscribe_retry=fixed(1, "PT10S"))})
        h.sender.route(UNSUBSCRIBE_URI, respond(500, {"error": "gone fishing"}))
        run = h.start()
        h.call_back(h.address())

        h.sweep_at(11)
        h.sweep_at(60)

        assert len(h.unsubscribes()) == 2
        stored = h.rendered(run.id)
        assert (stored["status"], stored["error"]) == ("Succeeded", None)
        action = stored["actions"]["W"]
        assert action["status"] == "Succeeded"
        assert action["error"] is None
        error = action["subscription"]["unsubscribeError"]
        assert error["code"] == "UnexpectedStatusCode"
        assert "500" in error["message"]
        check_settled(h, run.id)
        assert len(h.unsubscribes()) == 2

    def test_unsubscribe_connection_error_is_retried(self, h: Harness) -> None:
        """An unsubscribe that cannot connect is tried again."""
        h.save({"W": webhook_action(unsubscribe_retry=fixed(1, "PT10S"))})
        h.sender.route(UNSUBSCRIBE_URI, sequence(refused(), respond(200)))
        run = h.start()
        h.call_back(h.address())

        h.sweep_at(11)

        assert len(h.unsubscribes()) == 2
        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        check_settled(h, run.id)

    def test_unsubscribe_honours_retry_after_on_429(self, h: Harness) -> None:
        """A 429 with ``Retry-After`` from unsubscribe puts the next try that far out."""
        h.save({"W": webhook_action(unsubscribe_retry=fixed(2, "PT10S"))})
        h.sender.route(UNSUBSCRIBE_URI, sequence(respond(429, headers={"Retry-After": "120"}), respond(200)))
        run = h.start()
        h.call_back(h.address())

        h.sweep_at(30)
        assert len(h.unsubscribes()) == 1
        h.sweep_at(121)

        assert len(h.unsubscribes()) == 2
        check_settled(h, run.id)

    def test_unsubscribe_failure_after_a_timeout_keeps_the_timeout(self, h: Harness) -> None:
        """A timed-out action whose unsubscribe fails for good stays ``TimedOut``."""
        h.save({"W": webhook_action(limit={"timeout": "PT1M"})})
        h.sender.route(UNSUBSCRIBE_URI, respond(500))
        run = h.start()

        h.sweep_at(61)

        stored = h.rendered(run.id)
        assert stored["actions"]["W"]["status"] == "TimedOut"
        assert stored["error"]["code"] == "ActionTimedOut"
        assert stored["actions"]["W"]["subscription"]["unsubscribeError"]["code"] == "UnexpectedStatusCode"
        assert len(h.unsubscribes()) == 1


# =========================================================================== timeouts


class TestTimeouts:
    def test_webhook_times_out_when_its_limit_lapses(self, h: Harness) -> None:
        """With ``limit.timeout`` PT1H the action is ``TimedOut`` after an hour and unsubscribed; the run fails."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        run = h.start()
        address = h.address()

        h.sweep_at(3599)
        assert h.stored(run.id).status == RunStatus.WAITING
        assert h.unsubscribes() == []
        check_alarms(h)
        h.sweep_at(3601)

        stored = h.rendered(run.id)
        assert stored["status"] == "Failed"
        assert stored["error"]["code"] == "ActionTimedOut"
        assert stored["actions"]["W"]["status"] == "TimedOut"
        assert stored["actions"]["W"]["error"]["code"] == "ActionTimedOut"
        (unsubscribe,) = h.unsubscribes()
        assert unsubscribe.body == {"callbackUrl": address.url}
        check_settled(h, run.id)

    def test_callback_after_the_timeout_is_gone_and_changes_nothing(self, h: Harness) -> None:
        """Once the wait timed out its callback URL answers 410 and the run stays as it was."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        run = h.start()
        address = h.address()
        h.sweep_at(3601)
        before = h.snapshot(run.id)
        sent = len(h.sender.requests)

        with pytest.raises(Gone) as caught:
            h.call_back(address, {"late": True})

        assert caught.value.status == 410
        assert h.snapshot(run.id) == before
        assert len(h.sender.requests) == sent

    def test_action_after_timed_out_runs_and_handles_it(self, h: Harness) -> None:
        """An action with ``runAfter: ["TimedOut"]`` runs after a timeout and the run succeeds."""
        h.save(
            {
                "W": webhook_action(limit={"timeout": "PT10M"}),
                "OnTimeout": http_action(f"{TARGET}/escalate", run_after={"W": ["TimedOut"]}),
                "OnSuccess": http_action(f"{TARGET}/ok", run_after={"W": ["Succeeded"]}),
            }
        )
        run = h.start()

        h.sweep_at(601)

        stored = h.rendered(run.id)
        assert stored["actions"]["W"]["status"] == "TimedOut"
        assert stored["actions"]["OnTimeout"]["status"] == "Succeeded"
        assert stored["actions"]["OnSuccess"]["status"] == "Skipped"
        assert (stored["status"], stored["error"]) == ("Succeeded", None)
        assert len(h.sender.to(f"{TARGET}/escalate")) == 1
        assert h.sender.to(f"{TARGET}/ok") == []

    def test_failure_handler_does_not_catch_a_timeout(self, h: Harness) -> None:
        """An action that runs after ``Failed`` only is skipped by a timeout; the run fails with ``ActionTimedOut``."""
        h.save(
            {
                "W": webhook_action(limit={"timeout": "PT10M"}),
                "OnFailure": http_action(f"{TARGET}/failed", run_after={"W": ["Failed"]}),
            }
        )
        run = h.start()

        h.sweep_at(601)

        stored = h.rendered(run.id)
        assert stored["actions"]["OnFailure"]["status"] == "Skipped"
        assert (stored["status"], stored["error"]["code"]) == ("Failed", "ActionTimedOut")

    def test_webhook_without_timeout_ends_at_max_wait(self, make: MakeHarness) -> None:
        """Without ``limit.timeout`` a webhook waits until ``HOOKFLOW_MAX_WAIT``, then times out."""
        h = make(max_wait=timedelta(minutes=10))
        h.save({"W": webhook_action()})
        run = h.start()

        h.sweep_at(599)
        assert h.stored(run.id).status == RunStatus.WAITING
        check_alarms(h)
        h.sweep_at(601)

        stored = h.rendered(run.id)
        assert stored["actions"]["W"]["status"] == "TimedOut"
        assert stored["error"]["code"] == "ActionTimedOut"
        assert len(h.unsubscribes()) == 1

    def test_default_max_wait_is_ninety_days(self, h: Harness) -> None:
        """By default a webhook without a timeout waits 90 days."""
        h.save({"W": webhook_action()})
        run = h.start()

        h.sweep_at(timedelta(days=90).total_seconds() - 1)
        assert h.stored(run.id).status == RunStatus.WAITING
        h.sweep_at(timedelta(days=90).total_seconds() + 1)

        assert h.stored(run.id).actions["W"].status == ActionStatus.TIMED_OUT

    def test_timeout_beyond_max_wait_ends_at_max_wait(self, make: MakeHarness) -> None:
        """A ``limit.timeout`` longer than the maximum wait is cut to the maximum."""
        h = make(max_wait=timedelta(minutes=10))
        h.save({"W": webhook_action(limit={"timeout": "P1D"})})
        run = h.start()

        h.sweep_at(601)

        assert h.stored(run.id).actions["W"].status == ActionStatus.TIMED_OUT

    def test_http_timeout_stops_retries(self, h: Harness) -> None:
        """An Http action still failing when its ``limit.timeout`` lapses is ``TimedOut`` and not retried after it."""
        h.save({"A": http_action(API, retry=fixed(10, "PT10M"), limit={"timeout": "PT15M"})})
        h.sender.route(API, respond(500))
        run = h.start()

        h.sweep_at(601)
        h.sweep_at(901)
        h.sweep_at(3600)

        stored = h.rendered(run.id)
        assert stored["actions"]["A"]["status"] == "TimedOut"
        assert stored["actions"]["A"]["error"]["code"] == "ActionTimedOut"
        assert (stored["status"], stored["error"]["code"]) == ("Failed", "ActionTimedOut")
        assert len(h.sender.requests) <= 2

    def test_http_timeout_stops_polling(self, h: Harness) -> None:
        """An async Http action still answering 202 when its timeout lapses is ``TimedOut`` and not polled again."""
        h.save({"A": http_action(API, limit={"timeout": "PT1M"})})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status/1", "Retry-After": "20"}))
        h.sender.route(f"{TARGET}/status/1", respond(202, headers={"Retry-After": "20"}))
        run = h.start()

        for second in (21, 42, 61, 200):
            h.sweep_at(second)
            check_alarms(h)

        stored = h.rendered(run.id)
        assert stored["actions"]["A"]["status"] == "TimedOut"
        assert (stored["status"], stored["error"]["code"]) == ("Failed", "ActionTimedOut")
        assert len(h.sender.to(f"{TARGET}/status/1")) == 2
        check_settled(h, run.id)

    def test_polling_without_timeout_ends_at_max_wait(self, make: MakeHarness) -> None:
        """An asynchronous Http action without a timeout stops polling at the maximum wait."""
        h = make(max_wait=timedelta(minutes=2))
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status/1", "Retry-After": "30"}))
        h.sender.route(f"{TARGET}/status/1", respond(202, headers={"Retry-After": "30"}))
        run = h.start()

        for second in range(31, 200, 31):
            h.sweep_at(second)

        assert h.stored(run.id).actions["A"].status == ActionStatus.TIMED_OUT
        assert len(h.sender.to(f"{TARGET}/status/1")) <= 4


# =========================================================================== cancel


class TestCancel:
    def parallel(self, h: Harness) -> RunRecord:
        h.save(
            {
                "A": webhook_action(subscribe_uri=f"{TARGET}/a/subscribe"),
                "B": webhook_action(subscribe_uri=f"{TARGET}/b/subscribe"),
                "Join": http_action(f"{TARGET}/join", run_after={"A": ["Succeeded"], "B": ["Succeeded"]}),
            }
        )
        return h.start()

    def test_cancel_ends_the_run_and_unsubscribes_every_waiting_webhook(self, h: Harness) -> None:
        """Cancel ends the run ``Cancelled`` and calls unsubscribe once for each waiting webhook."""
        run = self.parallel(h)

        cancelled = h.engine.cancel_run(run.id)

        assert cancelled.status == RunStatus.CANCELLED
        stored = h.rendered(run.id)
        assert stored["status"] == "Cancelled"
        assert stored["endTime"] is not None
        assert stored["actions"]["A"]["status"] == "Cancelled"
        assert stored["actions"]["B"]["status"] == "Cancelled"
        assert stored["actions"]["Join"]["status"] != "Succeeded"
        unsubscribed = sorted(r.headers["x-ms-workflow-operation-name"] for r in h.unsubscribes())
        assert unsubscribed == ["A", "B"]
        assert h.sender.to(f"{TARGET}/join") == []
        check_settled(h, run.id)

    def test_callbacks_after_cancel_are_gone_and_change_nothing(self, h: Harness) -> None:
        """After cancel every callback URL of the run answers 410 and the run stays cancelled."""
        run = self.parallel(h)
        addresses = [h.address(f"{TARGET}/a/subscribe"), h.address(f"{TARGET}/b/subscribe")]
        h.engine.cancel_run(run.id)
        before = h.snapshot(run.id)
        sent = len(h.sender.requests)

        for address in addresses:
            with pytest.raises(Gone) as caught:
                h.call_back(address)
            assert caught.value.status == 410

        assert h.snapshot(run.id) == before
        assert len(h.sender.requests) == sent

    def test_cancel_of_an_ended_run_is_a_conflict(self, h: Harness) -> None:
        """Cancelling a run that already ended answers 409 and changes nothing."""
        h.save({"W": webhook_action()})
        run = h.start()
        h.call_back(h.address())
        before = h.snapshot(run.id)
        sent = len(h.sender.requests)

        with pytest.raises(Conflict) as caught:
            h.engine.cancel_run(run.id)

        assert caught.value.status == 409
        assert h.snapshot(run.id) == before
        assert len(h.sender.requests) == sent

    def test_second_cancel_is_a_conflict(self, h: Harness) -> None:
        """A cancelled run has ended: cancelling it again answers 409 and unsubscribes nothing more."""
        h.save({"W": webhook_action()})
        run = h.start()
        h.engine.cancel_run(run.id)

        with pytest.raises(Conflict):
            h.engine.cancel_run(run.id)

        assert len(h.unsubscribes()) == 1

    def test_cancel_stops_pending_retries(self, h: Harness) -> None:
        """A cancelled run makes no more retries of its Http action."""
        h.save({"A": http_action(API, retry=fixed(5, "PT10S"))})
        h.sender.route(API, respond(500))
        run = h.start()

        h.engine.cancel_run(run.id)
        h.sweep_at(100)

        assert len(h.sender.requests) == 1
        assert h.stored(run.id).status == RunStatus.CANCELLED
        check_settled(h, run.id)

    def test_cancel_stops_polling(self, h: Harness) -> None:
        """A cancelled run polls no more."""
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status/1", "Retry-After": "5"}))
        run = h.start()

        h.engine.cancel_run(run.id)
        h.sweep_at(100)

        assert h.sender.to(f"{TARGET}/status/1") == []
        assert h.stored(run.id).actions["A"].status == ActionStatus.CANCELLED

    def test_cancel_ends_a_delay(self, h: Harness) -> None:
        """A run waiting on a ``Wait`` action can be cancelled and the actions after it never run."""
        h.save({"D": wait_action(count=10), "After": http_action(API, run_after={"D": ["Succeeded"]})})
        run = h.start()

        h.engine.cancel_run(run.id)
        h.sweep_at(11)

        assert h.stored(run.id).status == RunStatus.CANCELLED
        assert h.sender.requests == []
        check_settled(h, run.id)

    def test_unsubscribe_after_cancel_is_retried_by_its_policy(self, h: Harness) -> None:
        """An unsubscribe that fails during cancel is retried later; the run stays ``Cancelled``."""
        h.save({"W": webhook_action(unsubscribe_retry=fixed(2, "PT10S"))})
        h.sender.route(UNSUBSCRIBE_URI, sequence(respond(503), respond(200)))
        run = h.start()

        h.engine.cancel_run(run.id)
        check_alarms(h)
        h.sweep_at(11)

        assert len(h.unsubscribes()) == 2
        assert h.stored(run.id).status == RunStatus.CANCELLED
        check_settled(h, run.id)


# =========================================================================== async polling


class TestAsyncPolling:
    def test_202_with_location_waits_then_polls_after_retry_after(self, h: Harness) -> None:
        """A 202 + Location makes the action ``Waiting``; after ``Retry-After`` the Location is polled until a 200."""
        h.save({"A": http_action(f"{TARGET}/jobs", method="POST", body={"n": 1})})
        h.sender.route(f"{TARGET}/jobs", respond(202, headers={"Location": f"{TARGET}/jobs/1", "Retry-After": "5"}))
        h.sender.route(f"{TARGET}/jobs/1", respond(200, {"result": 42}, {"Content-Type": "application/json"}))

        run = h.start()

        assert run.status == RunStatus.WAITING
        assert run.actions["A"].status == ActionStatus.WAITING
        check_alarms(h)
        h.sweep_at(4)
        assert h.sender.to(f"{TARGET}/jobs/1") == []
        h.sweep_at(6)

        (poll,) = h.sender.to(f"{TARGET}/jobs/1")
        assert poll.method == "GET"
        stored = h.rendered(run.id)
        assert stored["status"] == "Succeeded"
        assert stored["actions"]["A"]["status"] == "Succeeded"
        assert stored["actions"]["A"]["outputs"]["statusCode"] == 200
        assert stored["actions"]["A"]["outputs"]["body"] == {"result": 42}
        check_settled(h, run.id)

    def test_missing_retry_after_polls_every_twenty_seconds(self, h: Harness) -> None:
        """Without ``Retry-After`` the Location is polled every 20 seconds."""
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status"}))
        h.sender.route(f"{TARGET}/status", sequence(respond(202), respond(200)))
        run = h.start()

        assert h.stored(run.id).actions["A"].next_at == EPOCH + timedelta(seconds=20)
        h.sweep_at(19)
        assert h.sender.to(f"{TARGET}/status") == []
        h.sweep_at(21)
        assert len(h.sender.to(f"{TARGET}/status")) == 1
        assert h.stored(run.id).actions["A"].next_at == EPOCH + timedelta(seconds=41)
        h.sweep_at(42)

        assert len(h.sender.to(f"{TARGET}/status")) == 2
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_retry_after_zero_polls_at_once(self, h: Harness) -> None:
        """``Retry-After: 0`` on a 202 means poll again now, not after the 20-second default."""
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status", "Retry-After": "0"}))
        h.sender.route(f"{TARGET}/status", respond(200, {"done": True}))

        run = h.start()
        h.sweep_at(1)

        assert len(h.sender.to(f"{TARGET}/status")) == 1
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    @pytest.mark.parametrize(
        ("uri", "location", "polled"),
        [
            (f"{TARGET}/api/v1/jobs", "status/7", f"{TARGET}/api/v1/status/7"),
            (f"{TARGET}/api/v1/jobs", "/operations/7", f"{TARGET}/operations/7"),
            (f"{TARGET}/api/v1/jobs", "https://elsewhere.example/op/7", "https://elsewhere.example/op/7"),
        ],
    )
    def test_relative_location_resolves_against_the_request_url(
        self, h: Harness, uri: str, location: str, polled: str
    ) -> None:
        """A relative ``Location`` is polled relative to the URL the action called."""
        h.save({"A": http_action(uri, method="POST")})
        h.sender.route(uri, respond(202, headers={"Location": location, "Retry-After": "1"}))
        h.sender.route(polled, respond(200))
        run = h.start()

        h.sweep_at(2)

        assert len(h.sender.to(polled)) == 1
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_polls_reuse_the_action_authentication(self, h: Harness) -> None:
        """Each poll carries the action's own credentials."""
        auth = {"type": "Basic", "username": "svc", "password": "pa55word"}
        h.save({"A": http_action(API, authentication=auth)})
        h.sender.route(API, respond(202, headers={"Location": "/status", "Retry-After": "1"}))
        h.sender.route(f"{TARGET}/status", sequence(respond(202, headers={"Retry-After": "1"}), respond(200)))
        h.start()

        h.sweep_at(2)
        h.sweep_at(4)

        first, *polls = h.sender.requests
        assert len(polls) == 2
        assert all(p.headers["Authorization"] == first.headers["Authorization"] for p in polls)
        assert first.headers["Authorization"].startswith("Basic ")
        assert all(p.headers["x-ms-workflow-operation-name"] == "A" for p in polls)

    def test_a_new_location_on_a_202_is_followed(self, h: Harness) -> None:
        """A poll answered 202 with another ``Location`` moves the next poll there."""
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/step/1", "Retry-After": "1"}))
        h.sender.route(f"{TARGET}/step/1", respond(202, headers={"Location": "/step/2", "Retry-After": "1"}))
        h.sender.route(f"{TARGET}/step/2", respond(200, {"step": 2}))
        run = h.start()

        h.sweep_at(2)
        h.sweep_at(4)

        assert [r.url for r in h.sender.requests] == [API, f"{TARGET}/step/1", f"{TARGET}/step/2"]
        assert h.rendered(run.id)["actions"]["A"]["outputs"]["body"] == {"step": 2}

    def test_a_failing_final_answer_fails_the_action(self, h: Harness) -> None:
        """A non-202 error from the Location is the action's result: it fails with that answer as outputs."""
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status", "Retry-After": "1"}))
        h.sender.route(f"{TARGET}/status", respond(400, {"error": "bad job"}))
        run = h.start()

        h.sweep_at(2)

        action = h.rendered(run.id)["actions"]["A"]
        assert action["status"] == "Failed"
        assert action["outputs"]["statusCode"] == 400
        assert action["outputs"]["body"] == {"error": "bad job"}

    def test_429_while_polling_honours_retry_after(self, h: Harness) -> None:
        """A poll answered 429 with ``Retry-After`` is polled again after that time, not the policy's interval."""
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status", "Retry-After": "1"}))
        h.sender.route(f"{TARGET}/status", sequence(respond(429, headers={"Retry-After": "45"}), respond(200)))
        run = h.start()

        h.sweep_at(2)
        assert h.stored(run.id).actions["A"].next_at == EPOCH + timedelta(seconds=47)
        h.sweep_at(20)
        assert len(h.sender.to(f"{TARGET}/status")) == 1
        h.sweep_at(48)

        assert len(h.sender.to(f"{TARGET}/status")) == 2
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_429_while_polling_with_the_default_policy(self, h: Harness) -> None:
        """Without a ``retryPolicy`` a 429 on a poll is retried too, after its ``Retry-After``."""
        h.save({"A": http_action(API, retry=None)})
        h.sender.route(API, respond(202, headers={"Location": f"{TARGET}/status", "Retry-After": "1"}))
        h.sender.route(f"{TARGET}/status", sequence(respond(429, headers={"Retry-After": "30"}), respond(200)))
        run = h.start()

        h.sweep_at(2)
        h.sweep_at(33)

        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        assert len(h.sender.to(f"{TARGET}/status")) == 2

    def test_disable_async_pattern_makes_the_202_the_result(self, h: Harness) -> None:
        """With ``DisableAsyncPattern`` a 202 ends the action at once and nothing is polled."""
        h.save({"A": http_action(API, operationOptions="DisableAsyncPattern")})
        h.sender.route(API, respond(202, {"accepted": True}, {"Location": f"{TARGET}/status", "Retry-After": "1"}))

        run = h.start()
        h.sweep_at(60)

        assert run.status == RunStatus.SUCCEEDED
        action = h.rendered(run.id)["actions"]["A"]
        assert (action["status"], action["outputs"]["statusCode"]) == ("Succeeded", 202)
        assert h.sender.to(f"{TARGET}/status") == []
        assert h.items(run.id) == []

    def test_202_without_location_is_the_result(self, h: Harness) -> None:
        """A 202 without ``Location`` has nothing to poll: it is the result."""
        h.save({"A": http_action(API)})
        h.sender.route(API, respond(202))

        run = h.start()

        assert run.status == RunStatus.SUCCEEDED


# =========================================================================== Wait (delay)


class TestWaitAction:
    def test_interval_wait_ends_after_its_interval(self, h: Harness) -> None:
        """A 10-second ``Wait`` holds the run ``Waiting`` for 10 seconds, then the next action runs."""
        h.save({"D": wait_action(count=10), "After": http_action(API, run_after={"D": ["Succeeded"]})})

        run = h.start()

        assert run.status == RunStatus.WAITING
        assert run.actions["D"].status == ActionStatus.WAITING
        check_alarms(h)
        h.sweep_at(9)
        assert h.sender.requests == []
        h.sweep_at(11)

        stored = h.rendered(run.id)
        assert stored["actions"]["D"]["status"] == "Succeeded"
        assert stored["status"] == "Succeeded"
        assert len(h.sender.to(API)) == 1
        check_settled(h, run.id)

    @pytest.mark.parametrize(("count", "unit", "seconds"), [(2, "Minute", 120), (1, "Hour", 3600), (1, "Day", 86400)])
    def test_interval_units(self, h: Harness, count: int, unit: str, seconds: int) -> None:
        """Minutes, hours and days are counted as such."""
        h.save({"D": wait_action(count=count, unit=unit)})
        run = h.start()

        h.sweep_at(seconds - 1)
        assert h.stored(run.id).status == RunStatus.WAITING
        h.sweep_at(seconds + 1)

        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_until_wait_ends_at_its_timestamp(self, h: Harness) -> None:
        """A ``Wait`` until a timestamp ends at that time."""
        until = EPOCH + timedelta(hours=2)
        h.save({"D": wait_action(until=iso_z(until))})
        run = h.start()

        assert {i.due_at for i in h.items(run.id)} <= {until, EPOCH + LEASE}
        h.sweep_at(7199)
        assert h.stored(run.id).status == RunStatus.WAITING
        h.sweep_at(7201)

        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_until_in_the_past_ends_at_once(self, h: Harness) -> None:
        """A ``Wait`` until a time already past does not hold the run."""
        h.save(
            {"D": wait_action(until="2020-01-01T00:00:00Z"), "After": http_action(API, run_after={"D": ["Succeeded"]})}
        )

        run = h.start()

        assert run.status == RunStatus.SUCCEEDED
        assert len(h.sender.to(API)) == 1


# =========================================================================== callback outcome and heartbeats


class TestCallbackOutcome:
    def test_failed_outcome_fails_the_action_with_the_body_as_error(self, h: Harness) -> None:
        """A callback with ``x-hookflow-outcome: failed`` fails the action; its body is the error message."""
        h.save({"W": webhook_action()})
        run = h.start()

        resumed = h.call_back(h.address(), {"reason": "rejected"}, headers={"x-hookflow-outcome": "failed"})

        assert resumed.status == RunStatus.FAILED
        stored = h.rendered(run.id)
        action = stored["actions"]["W"]
        assert action["status"] == "Failed"
        assert action["error"]["code"] == "CallbackFailed"
        assert json.loads(action["error"]["message"]) == {"reason": "rejected"}
        assert stored["error"]["code"] == "ActionFailed"
        assert len(h.unsubscribes()) == 1
        check_settled(h, run.id)

    def test_failed_outcome_with_a_text_body(self, h: Harness) -> None:
        """A plain-text failure body is the error message as it is."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()

        request = callback_request(
            address, headers={"Content-Type": "text/plain", "X-Hookflow-Outcome": "Failed"}, raw=b"disk full"
        )
        h.engine.receive_action_callback(address.run_id, address.action, address.query, request)

        assert h.rendered(run.id)["actions"]["W"]["error"]["message"] == "disk full"

    def test_failure_handler_runs_after_a_failed_callback(self, h: Harness) -> None:
        """A ``runAfter: ["Failed"]`` action handles a failed callback and the run succeeds."""
        h.save({"W": webhook_action(), "OnFailure": http_action(f"{TARGET}/failed", run_after={"W": ["Failed"]})})
        run = h.start()

        h.call_back(h.address(), {"reason": "no"}, headers={"x-hookflow-outcome": "failed"})

        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        assert len(h.sender.to(f"{TARGET}/failed")) == 1


class TestHeartbeat:
    def test_heartbeat_does_not_resume_the_run(self, h: Harness) -> None:
        """A heartbeat keeps the action ``Waiting``: no outputs, no unsubscribe, the URL still resumes later."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H", "heartbeat": "PT30M"})})
        run = h.start()
        address = h.address()
        h.at(600)

        answer = h.heartbeat(address)

        assert answer.status == RunStatus.WAITING
        stored = h.stored(run.id)
        assert stored.actions["W"].status == ActionStatus.WAITING
        assert stored.actions["W"].outputs is None
        assert h.unsubscribes() == []
        check_alarms(h)
        assert h.call_back(address).status == RunStatus.SUCCEEDED

    def test_heartbeat_pushes_the_timeout_forward(self, h: Harness) -> None:
        """A heartbeat at 50 min with ``limit.heartbeat`` PT30M keeps a PT1H wait alive until 80 min."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H", "heartbeat": "PT30M"})})
        run = h.start()
        address = h.address()
        h.at(50 * 60)

        h.heartbeat(address)

        assert h.stored(run.id).actions["W"].deadline == EPOCH + timedelta(minutes=80)
        h.sweep_at(61 * 60)
        assert h.stored(run.id).actions["W"].status == ActionStatus.WAITING
        check_alarms(h)
        h.sweep_at(80 * 60 + 1)

        assert h.stored(run.id).actions["W"].status == ActionStatus.TIMED_OUT
        assert len(h.unsubscribes()) == 1

    def test_callback_after_the_original_timeout_resumes_a_kept_alive_wait(self, h: Harness) -> None:
        """A wait kept alive by a heartbeat still accepts its callback after the original timeout."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H", "heartbeat": "PT30M"})})
        run = h.start()
        address = h.address()
        h.at(50 * 60)
        h.heartbeat(address)
        h.sweep_at(61 * 60)
        h.at(75 * 60)

        assert h.call_back(address).status == RunStatus.SUCCEEDED
        assert h.rendered(run.id)["actions"]["W"]["status"] == "Succeeded"

    def test_heartbeat_never_brings_the_timeout_closer(self, h: Harness) -> None:
        """An early heartbeat whose push ends before the timeout leaves the timeout where it was."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H", "heartbeat": "PT10M"})})
        run = h.start()
        h.at(60)

        h.heartbeat(h.address())

        assert h.stored(run.id).actions["W"].deadline == EPOCH + timedelta(hours=1)

    def test_heartbeat_without_limit_heartbeat_changes_no_deadline(self, h: Harness) -> None:
        """Without ``limit.heartbeat`` a heartbeat is accepted but the wait times out when it would have."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        run = h.start()
        deadline = h.stored(run.id).actions["W"].deadline
        h.at(3000)

        assert h.heartbeat(h.address()).status == RunStatus.WAITING

        assert h.stored(run.id).actions["W"].deadline == deadline
        h.sweep_at(3601)
        assert h.stored(run.id).actions["W"].status == ActionStatus.TIMED_OUT

    def test_heartbeat_after_the_timeout_is_gone(self, h: Harness) -> None:
        """A heartbeat for a wait that timed out answers 410 and revives nothing."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H", "heartbeat": "PT30M"})})
        run = h.start()
        address = h.address()
        h.sweep_at(3601)
        before = h.snapshot(run.id)

        with pytest.raises(Gone):
            h.heartbeat(address)

        assert h.snapshot(run.id) == before


# =========================================================================== the alarm rule


class TestAlarmRule:
    """After any operation a run that is not over has its alarm in the index."""

    def test_webhook_life(self, h: Harness) -> None:
        """Start, an early alarm, a heartbeat and the callback all leave the run with the alarm it needs."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H", "heartbeat": "PT30M"})})
        run = h.start()
        check_alarms(h)
        address = h.address()
        h.sweep_at(LEASE.total_seconds() + 1)
        check_alarms(h)
        h.at(2400)
        h.heartbeat(address)
        check_alarms(h)
        h.sweep_at(3601)
        check_alarms(h)
        assert h.stored(run.id).status == RunStatus.WAITING
        h.call_back(address)
        check_alarms(h)
        check_settled(h, run.id)

    def test_mixed_run(self, h: Harness) -> None:
        """A run that retries, polls, delays and waits on a webhook has its alarm after every step."""
        h.save(
            {
                "Retry": http_action(f"{TARGET}/flaky", retry=fixed(2, "PT10S")),
                "Poll": http_action(f"{TARGET}/jobs", run_after={"Retry": ["Succeeded"]}),
                "Delay": wait_action(count=30, run_after={"Poll": ["Succeeded"]}),
                "W": webhook_action(limit={"timeout": "PT10M"}, run_after={"Delay": ["Succeeded"]}),
            }
        )
        h.sender.route(f"{TARGET}/flaky", sequence(respond(503), respond(200)))
        h.sender.route(f"{TARGET}/jobs", respond(202, headers={"Location": "/jobs/1", "Retry-After": "15"}))
        h.sender.route(f"{TARGET}/jobs/1", respond(200))
        run = h.start()
        check_alarms(h)

        statuses = []
        for second in (11, 27, 58, 120, 700):
            h.sweep_at(second)
            check_alarms(h)
            statuses.append(h.stored(run.id).status)

        assert statuses[:-1] == [RunStatus.WAITING] * 4
        assert h.stored(run.id).actions["W"].status == ActionStatus.TIMED_OUT
        check_settled(h, run.id)

    def test_ended_run_leaves_no_alarm(self, h: Harness) -> None:
        """A run that ends within one request leaves nothing in the index."""
        h.save({"A": http_action(API)})

        run = h.start()

        assert h.items(run.id) == []
        assert h.stored(run.id).alarm_at is None

    def test_cancelled_run_leaves_no_live_alarm(self, h: Harness) -> None:
        """Cancel removes the run's alarm once unsubscribe succeeded."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        run = h.start()
        h.sweep_at(LEASE.total_seconds() + 1)

        h.engine.cancel_run(run.id)

        check_alarms(h)
        check_settled(h, run.id)


# =========================================================================== the sweep


class TestSweep:
    def start_delays(self, h: Harness, runs: int, seconds: int = 10) -> list[str]:
        h.save({"D": wait_action(count=seconds)})
        return [h.start().id for _ in range(runs)]

    def test_item_is_handled_by_a_sweep_at_its_due_time(self, h: Harness) -> None:
        """A sweep at exactly the moment an item is due handles it (due means at or before now)."""
        (run_id,) = self.start_delays(h, 1)

        report = h.sweep_at(10)

        assert report.found == 1
        assert h.stored(run_id).status == RunStatus.SUCCEEDED

    def test_only_due_items_are_read(self, h: Harness) -> None:
        """The index query returns what is due and nothing due later."""
        for i in range(1000):
            h.store.add_due(f"{i:029x}", EPOCH + timedelta(days=1, seconds=i))
        self.start_delays(h, 3)
        h.at(11)

        due = h.store.due_items(h.clock.now, 10_000)

        assert len(due) == 3
        assert all(i.due_at <= h.clock.now for i in due)

    def test_sweep_cost_grows_with_due_items_not_with_waiting_ones(self, make: MakeHarness) -> None:
        """A thousand items due tomorrow add no storage transaction to a sweep of five due items."""
        spent = []
        for extra in (0, 1000):
            h = make()
            for i in range(extra):
                h.store.add_due(f"{i:029x}", EPOCH + timedelta(days=1, seconds=i))
            runs = self.start_delays(h, 5)
            h.at(11)
            before = h.store.transactions
            report = h.engine.sweep()
            spent.append(h.store.transactions - before)
            assert report.done == 5
            assert all(h.stored(r).status == RunStatus.SUCCEEDED for r in runs)

        assert spent[0] == spent[1]

    def test_sweep_with_nothing_due_costs_one_query(self, h: Harness) -> None:
        """With only future items, a sweep is a single index query."""
        for i in range(1000):
            h.store.add_due(f"{i:029x}", EPOCH + timedelta(days=1, seconds=i))
        before = h.store.transactions

        report = h.engine.sweep()

        assert report.found == 0
        assert h.store.transactions - before == 1

    def test_sweep_is_bounded_by_its_batch(self, h: Harness) -> None:
        """One sweep handles at most ``batch`` items; the rest wait for the next ones."""
        runs = self.start_delays(h, 5)
        h.at(11)

        reports = [h.engine.sweep(batch=2) for _ in range(3)]

        assert [r.found for r in reports] == [2, 2, 1]
        assert [r.done for r in reports] == [2, 2, 1]
        assert all(h.stored(r).status == RunStatus.SUCCEEDED for r in runs)

    def test_sweep_over_its_budget_leaves_items_for_the_next(self, h: Harness) -> None:
        """Items a sweep has no time left for stay due and the next sweep does them."""
        runs = self.start_delays(h, 3)
        h.at(11)

        spent = h.engine.sweep(budget=timedelta(seconds=-1))  # a budget already used up

        assert (spent.found, spent.left, spent.done) == (3, 3, 0)
        assert all(h.stored(r).status == RunStatus.WAITING for r in runs)
        assert h.engine.sweep().done == 3
        assert all(h.stored(r).status == RunStatus.SUCCEEDED for r in runs)

    def test_claimed_item_is_skipped_until_its_claim_runs_out(self, h: Harness) -> None:
        """An item another sweep has claimed is left alone; once that claim expires it is processed."""
        (run_id,) = self.start_delays(h, 1)
        h.at(11)
        (item,) = h.store.due_items(h.clock.now, 10)
        assert h.store.claim_due(item, h.clock.now + LEASE) is not None

        busy = h.engine.sweep()

        assert (busy.found, busy.busy, busy.done) == (0, 0, 0)  # claimed items are not even read
        assert h.stored(run_id).status == RunStatus.WAITING
        h.past_lease()
        assert h.engine.sweep().done == 1
        assert h.stored(run_id).status == RunStatus.SUCCEEDED
        assert h.items(run_id) == []

    def test_claims_are_etag_conditional(self, h: Harness) -> None:
        """Of two sweeps that read the same item, only the first claim wins."""
        self.start_delays(h, 1)
        h.at(11)
        (item,) = h.store.due_items(h.clock.now, 10)

        first = h.store.claim_due(item, h.clock.now + LEASE)
        second = h.store.claim_due(item, h.clock.now + LEASE)

        assert first is not None
        assert second is None

    def test_overlapping_sweeps_advance_a_run_once(self, h: Harness) -> None:
        """When a second sweep claims an item between the first one's read and claim, the retry is made once."""
        h.save({"A": http_action(API, retry=fixed(2, "PT10S"))})
        h.sender.route(API, sequence(respond(500), respond(200)))
        run = h.start()
        h.at(11)
        inner: list[SweepReport] = []
        entered: list[bool] = []

        def other_sweep_first(table: str, ops: Sequence[Op]) -> None:
            if not entered and _kind(table) == "due" and ops[0].kind == "update":
                entered.append(True)
                inner.append(h.engine.sweep())

        h.store.before_submit = other_sweep_first
        outer = h.engine.sweep()

        assert inner[0].done == 1
        assert (outer.done, outer.busy) == (0, 1)
        assert len(h.sender.requests) == 2
        assert h.stored(run.id).status == RunStatus.SUCCEEDED

    def test_run_held_by_someone_else_is_left_to_them(self, h: Harness) -> None:
        """Waking a run while its holder is still inside subscribe does nothing and says so."""
        h.save({"W": webhook_action()})
        woken: list[bool] = []

        def subscribe(request: OutboundRequest) -> OutboundResponse:
            (run,) = h.runs()
            (item,) = h.items(run.id)
            woken.append(h.engine.wake(item))
            return respond(200)

        h.sender.route(SUBSCRIBE_URI, subscribe)
        run = h.start()

        assert woken == [False]
        assert len(h.subscribes()) == 1
        assert h.stored(run.id).status == RunStatus.WAITING
        check_alarms(h)

    def test_item_of_a_missing_run_is_deleted(self, h: Harness) -> None:
        """A due item whose run does not exist is dropped by the sweep, once it is older than a lease."""
        h.store.add_due("0" * 29, EPOCH)

        young = h.sweep_at(1)
        assert (young.done, young.busy) == (0, 1)  # its run's first write may still be on its way
        h.past_lease()
        report = h.engine.sweep()

        assert report.done == 1
        assert h.items() == []
        assert h.sender.requests == []

    def test_stale_alarm_is_deleted_and_changes_nothing(self, h: Harness) -> None:
        """An item that is not the run's alarm any more is dropped without touching the run."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        run = h.start()
        h.store.add_due(run.id, EPOCH + timedelta(seconds=1))
        before = h.snapshot(run.id)
        sent = len(h.sender.requests)

        h.sweep_at(2)  # too young to call stale: left for later
        h.past_lease()
        report = h.engine.sweep()

        assert report.done >= 1
        assert h.snapshot(run.id)[1]["actions"] == before[1]["actions"]
        assert len(h.sender.requests) == sent
        assert EPOCH + timedelta(seconds=1) not in {i.due_at for i in h.items(run.id)}
        check_alarms(h)

    def test_alarm_that_fires_early_is_rearmed(self, h: Harness) -> None:
        """An alarm that comes before anything is due leaves the run waiting with a new alarm in place."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        run = h.start()

        h.sweep_at(LEASE.total_seconds() + 1)

        stored = h.stored(run.id)
        assert stored.status == RunStatus.WAITING
        assert stored.alarm_at is not None
        assert h.clock.now < stored.alarm_at <= EPOCH + timedelta(hours=1)
        check_alarms(h)

    def test_alarm_is_written_before_the_run(self, h: Harness) -> None:
        """On start, the run's alarm reaches the index before the run itself does."""
        writes: list[str] = []
        h.save({"W": webhook_action()})
        h.store.before_submit = lambda table, ops: writes.append(f"{_kind(table)}:{ops[0].kind}")

        h.start()

        assert writes.index("due:create") < writes.index("runs:create")
        assert h.violations == []


# =========================================================================== crash recovery


class TestCrashDuringStart:
    @pytest.mark.parametrize("write", [1, 2], ids=["the-alarm", "the-write-ahead"])
    def test_crash_at_the_first_writes_of_a_start_leaves_at_most_an_orphan(self, h: Harness, write: int) -> None:
        """A store that fails on the alarm or on the run's insert leaves no run and no subscription,
        and at most an orphan item, which the sweep drops."""
        h.save({"W": webhook_action()})
        h.store.before_submit = CrashOnWrite(write, h.sender)

        with pytest.raises(StorageDown):
            h.start()

        assert h.runs() == []
        assert h.subscribes() == []
        recover(h)
        assert h.items() == []
        assert h.sender.requests == []

    @pytest.mark.parametrize("after_delivery", [False, True], ids=["before-delivery", "after-delivery"])
    def test_crash_inside_subscribe_is_finished_by_the_sweep(self, h: Harness, after_delivery: bool) -> None:
        """A process that dies inside subscribe leaves a run the sweep subscribes again, with the same URL."""
        h.save({"W": webhook_action()})
        target = DiesOnce(respond(200), after_delivery=after_delivery)
        h.sender.route(SUBSCRIBE_URI, target)

        with pytest.raises(ProcessDied):
            h.start()

        (run,) = h.runs()
        assert not run.status.ended
        check_alarms(h)
        h.sweep_at(60)
        assert len(target.delivered) == int(after_delivery)
        recover(h)

        assert len(target.delivered) == 1 + int(after_delivery)
        assert len(h.callback_urls_sent()) == 1
        assert h.stored(run.id).status == RunStatus.WAITING
        assert wait_of(h.stored(run.id), "W").subscribed is True
        check_alarms(h)
        assert h.call_back(h.address()).status == RunStatus.SUCCEEDED
        assert len(h.unsubscribes()) == 1
        check_settled(h, run.id)

    def test_crash_after_subscribe_before_its_record(self, h: Harness) -> None:
        """A store failing on the write after subscribe: the sweep subscribes again with the same URL."""
        h.save({"W": webhook_action()})
        h.store.before_submit = CrashOnWrite(3, h.sender)

        with pytest.raises(StorageDown):
            h.start()

        (run,) = h.runs()
        check_alarms(h)
        recover(h)

        assert len(h.subscribes()) == 2
        assert len(h.callback_urls_sent()) == 1
        assert h.stored(run.id).status == RunStatus.WAITING
        h.call_back(h.address())
        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        assert len(h.unsubscribes()) == 1
        check_settled(h, run.id)

    def test_callback_between_the_crash_and_the_sweep_still_unsubscribes(self, h: Harness) -> None:
        """A target subscribed just before a crash that calls back before the sweep is still unsubscribed."""
        h.save({"W": webhook_action()})
        h.store.before_submit = CrashOnWrite(3, h.sender)
        with pytest.raises(StorageDown):
            h.start()
        (run,) = h.runs()
        address = h.address()

        h.call_back(address)
        check_alarms(h)
        recover(h)

        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        assert len(h.subscribes()) <= 2
        assert len(h.unsubscribes()) == 1
        assert h.unsubscribes()[0].body == {"callbackUrl": address.url}
        check_settled(h, run.id)

    def test_cancel_between_the_crash_and_the_sweep_still_unsubscribes(self, h: Harness) -> None:
        """A target subscribed just before a crash is unsubscribed when the run is then cancelled."""
        h.save({"W": webhook_action()})
        h.store.before_submit = CrashOnWrite(3, h.sender)
        with pytest.raises(StorageDown):
            h.start()
        (run,) = h.runs()

        h.engine.cancel_run(run.id)
        recover(h)

        assert h.stored(run.id).status == RunStatus.CANCELLED
        assert len(h.unsubscribes()) == 1
        check_settled(h, run.id)


class TestCrashDuringResume:
    def test_crash_before_the_resume_is_written_keeps_the_wait_open(self, h: Harness) -> None:
        """A store failing on the callback's first write leaves the run waiting; the target's retry resumes it."""
        h.save({"W": webhook_action()})
        run = h.start()
        h.store.before_submit = CrashOnWrite(1, h.sender)

        with pytest.raises(StorageDown):
            h.call_back(h.address())

        assert h.stored(run.id).status == RunStatus.WAITING
        assert h.unsubscribes() == []
        check_alarms(h)
        recover(h)
        assert h.call_back(h.address()).status == RunStatus.SUCCEEDED
        assert len(h.unsubscribes()) == 1
        check_settled(h, run.id)

    @pytest.mark.parametrize("after_delivery", [False, True], ids=["before-delivery", "after-delivery"])
    def test_crash_inside_unsubscribe_is_finished_by_the_sweep(self, h: Harness, after_delivery: bool) -> None:
        """A process dying inside unsubscribe leaves it owed; the sweep calls it again; the run stays ``Succeeded``."""
        h.save({"W": webhook_action()})
        target = DiesOnce(respond(200), after_delivery=after_delivery)
        h.sender.route(UNSUBSCRIBE_URI, target)
        run = h.start()

        with pytest.raises(ProcessDied):
            h.call_back(h.address())

        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        check_alarms(h)
        recover(h)

        assert len(target.delivered) == 1 + int(after_delivery)
        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        check_settled(h, run.id)

    def test_crash_in_the_middle_of_a_run_is_continued_by_the_sweep(self, h: Harness) -> None:
        """A process dying in an Http call after a resume leaves the run to the sweep, which goes on from there."""
        h.save(
            {
                "W": webhook_action(),
                "A": http_action(f"{TARGET}/work", method="POST", run_after={"W": ["Succeeded"]}),
                "Done": http_action(f"{TARGET}/done", run_after={"A": ["Succeeded"]}),
            }
        )
        work = DiesOnce(respond(200, {"ok": True}), after_delivery=False)
        h.sender.route(f"{TARGET}/work", work)
        run = h.start()

        with pytest.raises(ProcessDied):
            h.call_back(h.address())

        assert not h.stored(run.id).status.ended
        check_alarms(h)
        recover(h)

        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        assert len(work.delivered) == 1
        assert len(h.sender.to(f"{TARGET}/done")) == 1
        assert len(h.unsubscribes()) == 1
        check_settled(h, run.id)

    def test_crash_during_a_timeout_sweep_is_finished_by_the_next(self, h: Harness) -> None:
        """A sweep dying while timing out a wait leaves the work to the next sweep: one unsubscribe, run ``Failed``."""
        h.save({"W": webhook_action(limit={"timeout": "PT1H"})})
        target = DiesOnce(respond(200), after_delivery=False)
        h.sender.route(UNSUBSCRIBE_URI, target)
        run = h.start()

        report = h.sweep_at(3601)

        assert report.failed == 1
        check_alarms(h)
        recover(h)
        assert len(target.delivered) == 1
        assert h.rendered(run.id)["error"]["code"] == "ActionTimedOut"
        check_settled(h, run.id)


# More than the writes of each life, so that every one of them fails once (the rest run clean).
WRITES = range(1, 17)
LONG_WRITES = range(1, 33)


class TestCrashAtEveryWrite:
    """The store fails at the n-th write of a whole life; retries and the sweep finish the work."""

    def expect_calls(self, h: Harness, crash: CrashOnWrite, url: str) -> None:
        """``url`` was called once, or twice when the crash fell between the call and its record."""
        made = len(h.sender.to(url))
        if crash.redone(url):
            assert 1 <= made <= 2, (url, made, crash.fired)
        else:
            assert made == 1, (url, made, crash.fired)

    @pytest.mark.parametrize("n", WRITES)
    def test_webhook_resumed_by_its_callback(self, h: Harness, n: int) -> None:
        """Started, subscribed, called back: the run succeeds, one URL, subscribe and unsubscribe counts right."""
        h.save({"W": webhook_action()})
        crash = CrashOnWrite(n, h.sender)
        h.store.before_submit = crash

        start_until_accepted(h)
        recover(h)
        check_alarms(h)
        call_back_until_accepted(h)
        recover(h)

        (run,) = h.runs()
        assert run.status == RunStatus.SUCCEEDED, crash.fired
        assert len(h.callback_urls_sent()) == 1
        self.expect_calls(h, crash, SUBSCRIBE_URI)
        self.expect_calls(h, crash, UNSUBSCRIBE_URI)
        check_alarms(h)
        check_settled(h, run.id)

    @pytest.mark.parametrize("n", WRITES)
    def test_webhook_timed_out_by_the_sweep(self, h: Harness, n: int) -> None:
        """A wait that times out while the store fails somewhere still ends ``TimedOut`` and is unsubscribed."""
        h.save({"W": webhook_action(limit={"timeout": "PT30M"})})
        crash = CrashOnWrite(n, h.sender)
        h.store.before_submit = crash

        start_until_accepted(h)
        recover(h)
        h.at(1801)
        with suppress(StorageDown):
            h.engine.sweep()
        recover(h, rounds=3)

        (run,) = h.runs()
        assert run.actions["W"].status == ActionStatus.TIMED_OUT, crash.fired
        assert run.error is not None
        assert run.error.code == "ActionTimedOut"
        self.expect_calls(h, crash, SUBSCRIBE_URI)
        self.expect_calls(h, crash, UNSUBSCRIBE_URI)
        check_alarms(h)
        check_settled(h, run.id)

    @pytest.mark.parametrize("n", WRITES)
    def test_webhook_cancelled(self, h: Harness, n: int) -> None:
        """A run cancelled while the store fails somewhere ends ``Cancelled`` and is unsubscribed."""
        h.save({"W": webhook_action()})
        crash = CrashOnWrite(n, h.sender)
        h.store.before_submit = crash

        start_until_accepted(h)
        recover(h)
        (run,) = h.runs()
        for _ in range(3):
            try:
                h.engine.cancel_run(run.id)
            except StorageDown:
                continue
            except Conflict:
                pass
            break
        recover(h)

        assert h.stored(run.id).status == RunStatus.CANCELLED, crash.fired
        self.expect_calls(h, crash, SUBSCRIBE_URI)
        self.expect_calls(h, crash, UNSUBSCRIBE_URI)
        check_alarms(h)
        check_settled(h, run.id)

    @pytest.mark.parametrize("n", LONG_WRITES)
    def test_two_webhooks_with_work_between(self, h: Harness, n: int) -> None:
        """Webhook, Http call, webhook: every step happens, each side effect once unless a crash hid it."""
        one, two = f"{TARGET}/one", f"{TARGET}/two"
        h.save(
            {
                "W1": webhook_action(
                    subscribe_uri=f"{one}/subscribe",
                    unsubscribe={"method": "POST", "uri": f"{one}/unsubscribe", "body": "@listCallbackUrl()"},
                ),
                "A": http_action(f"{TARGET}/work", method="POST", run_after={"W1": ["Succeeded"]}),
                "W2": webhook_action(
                    subscribe_uri=f"{two}/subscribe",
                    unsubscribe={"method": "POST", "uri": f"{two}/unsubscribe", "body": "@listCallbackUrl()"},
                    run_after={"A": ["Succeeded"]},
                ),
            }
        )
        crash = CrashOnWrite(n, h.sender)
        h.store.before_submit = crash

        start_until_accepted(h)
        recover(h)
        call_back_until_accepted(h, f"{one}/subscribe")
        recover(h)
        check_alarms(h)
        call_back_until_accepted(h, f"{two}/subscribe")
        recover(h)

        (run,) = h.runs()
        assert run.status == RunStatus.SUCCEEDED, crash.fired
        assert len(h.callback_urls_sent(f"{one}/subscribe")) == 1
        assert len(h.callback_urls_sent(f"{two}/subscribe")) == 1
        for url in (
            f"{one}/subscribe",
            f"{one}/unsubscribe",
            f"{TARGET}/work",
            f"{two}/subscribe",
            f"{two}/unsubscribe",
        ):
            self.expect_calls(h, crash, url)
        check_alarms(h)
        check_settled(h, run.id)


def test_crash_tools_fire_once() -> None:
    """The crash hook fails exactly the write it was asked to and no other (a check of the test tools)."""
    sender = FakeSender()
    crash = CrashOnWrite(2, sender)
    crash("hookflowdue", [])
    with pytest.raises(StorageDown):
        crash("hookflowruns", [])
    crash("hookflowruns", [])
    assert crash.seen == 3
    assert crash.fired == "hookflowruns: "


class TestReviewRegressions:
    """Races an independent review found; each test replays one."""

    def test_a_sweep_between_an_alarm_and_its_run_write_does_not_strand_the_run(self, h: Harness) -> None:
        """A sweep that runs after a run's alarm is written but before the run is leaves the alarm,
        and the run still ends when its time comes."""
        h.save({"P": wait_action(count=5)})
        sweeps: list[SweepReport] = []

        def sweep_before_the_run_lands(table: str, ops: Sequence[Op]) -> None:
            if not sweeps and _kind(table) == "runs" and ops[0].kind == "create":
                h.store.before_submit = None
                sweeps.append(h.engine.sweep())

        h.store.before_submit = sweep_before_the_run_lands
        run = h.start()

        assert sweeps
        assert sweeps[0].done == 0  # the alarm was not taken for an orphan
        h.past_lease()
        h.engine.sweep()
        assert h.stored(run.id).status == RunStatus.SUCCEEDED
        check_alarms(h)

    def test_the_callback_that_won_answers_200_when_a_cancel_takes_the_run(self, h: Harness) -> None:
        """A callback whose run is cancelled while it advances still gets the stored run back, not 409."""
        h.save({"W": webhook_action(), "After": http_action(API, run_after={"W": ["Succeeded"]})})
        run = h.start()
        address = h.address()

        def cancel_meanwhile(request: OutboundRequest) -> OutboundResponse:
            h.engine.cancel_run(run.id)
            return respond(200)

        h.sender.route(API, cancel_meanwhile)

        answered = h.call_back(address)

        assert answered.status == RunStatus.CANCELLED
        assert answered.actions["W"].status == ActionStatus.SUCCEEDED

    def test_a_callback_after_the_deadline_is_gone_before_the_sweep_gets_there(self, h: Harness) -> None:
        """Once a wait's timeout has passed, its callback answers 410 even if no sweep has run yet."""
        h.save({"W": webhook_action(limit={"timeout": "PT1M"})})
        run = h.start()
        address = h.address()
        before = h.snapshot(run.id)
        h.at(61)

        with pytest.raises(Gone):
            h.call_back(address)

        assert h.snapshot(run.id) == before

    def test_claimed_items_do_not_fill_the_batch(self, h: Harness) -> None:
        """With the head of the queue claimed by a sweep that died, the next item is still done."""
        h.save({"P": wait_action(count=5)})
        ids = [h.start().id for _ in range(3)]
        h.at(6)
        items = sorted(h.store.due_items(h.clock.now, 10), key=lambda i: i.keys)
        for item in items[:2]:
            assert h.store.claim_due(item, h.clock.now + LEASE) is not None

        report = h.engine.sweep(batch=1)

        assert report.done == 1
        done = [i for i in ids if h.stored(i).status == RunStatus.SUCCEEDED]
        assert len(done) == 1

    def test_two_callbacks_at_the_same_instant_still_have_one_winner(self, h: Harness) -> None:
        """Two callbacks stamped with the same time: the one whose write lost answers 409, not 200."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()
        raced: list[bool] = []
        original = h.store.save_run

        def other_callback_first(loaded: LoadedRun, record: RunRecord) -> LoadedRun:
            if not raced:
                raced.append(True)
                h.store.save_run = original  # type: ignore[method-assign]
                h.call_back(address, {"by": "the other"})
            return original(loaded, record)

        h.store.save_run = other_callback_first  # type: ignore[method-assign,assignment]
        with pytest.raises(Conflict):
            h.call_back(address, {"by": "this one"})

        assert h.stored(run.id).actions["W"].outputs["body"] == {"by": "the other"}
