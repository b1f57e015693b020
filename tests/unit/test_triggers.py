"""Workflows and their triggers: lifecycle, webhook triggers, polling triggers, trigger URLs,
signed inbound webhooks and the concurrency limit, against ``MemoryStore`` and ``FakeSender``.

Time only moves when a test moves the :class:`FakeClock`; the timer is ``engine.sweep()``.
Targets (subscribe, unsubscribe, the polled feed) are handlers of the :class:`FakeSender`.
Every workflow write is watched for the trigger alarm rule: a polling or ``Failed`` trigger
of an enabled workflow has its alarm (``w-<name>``) in the due-item index before its state is
written, and tests that drive triggers through the clock check the rule again at the end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
import pytest

from functions import workflows as workflow_functions
from shared import bootstrap
from shared.durations import iso
from shared.engine import Engine, SweepReport
from shared.errors import BadRequest, Conflict, Gone, NotFound, TooManyRequests, Unauthorized
from shared.models import ActionStatus, RunRecord, RunStatus
from shared.outbound import OutboundError, OutboundRequest, OutboundResponse
from shared.receivers import sign_github, sign_standard_webhooks
from shared.signing import CallbackSigner
from shared.store import MemoryStore, StoredWorkflow
from shared.store.base import DueItem, Op, due_keys
from shared.triggers import ALARM_PREFIX, MAX_POLLS_PER_WAKE, TriggerState, Workflows
from tests.unit.builders import (
    BASE_URL,
    NO_RETRY,
    SUBSCRIBE_URI,
    TARGET,
    UNSUBSCRIBE_URI,
    callback_request,
    definition,
    inbound,
    parse_callback_url,
    put_body,
    request_trigger,
    webhook_action,
)
from tests.unit.fakes import EPOCH, FakeClock, FakeSender, respond

MAX_BODY = 4096
SIGNING_KEY = b"unit-test-triggers-key"
LEASE = timedelta(minutes=5)
FAR_FUTURE = EPOCH + timedelta(days=3650)
POLL_URI = f"{TARGET}/poll"
ACTION_SUBSCRIBE_URI = f"{TARGET}/action/subscribe"

GITHUB_SETTING = "GITHUB_WEBHOOK_SECRET"
GITHUB_SECRET = "It's a Secret to Everybody"
STANDARD_SETTING = "STANDARD_WEBHOOK_SECRET"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-unit-test-key").decode()
HMAC_SETTING = "GENERIC_HMAC_SECRET"
HMAC_SECRET = "generic-hmac-unit-test-secret"
ENV = {GITHUB_SETTING: GITHUB_SECRET, STANDARD_SETTING: STANDARD_SECRET, HMAC_SETTING: HMAC_SECRET}

GITHUB_SIGNATURE: dict[str, Any] = {"scheme": "github", "secretSetting": GITHUB_SETTING}
STANDARD_SIGNATURE: dict[str, Any] = {"scheme": "standardWebhooks", "secretSetting": STANDARD_SETTING}
HMAC_SIGNATURE: dict[str, Any] = {
    "scheme": "hmac",
    "secretSetting": HMAC_SETTING,
    "header": "X-Signature",
    "prefix": "sha256=",
    "idHeader": "X-Delivery-Id",
}


def lowest(low: float, high: float) -> float:
    """Retry jitter that always picks the bottom of the range, so back-off is predictable."""
    return low


class StorageDown(RuntimeError):
    """A storage write that fails (the process dies right after it)."""


# --------------------------------------------------------------------------- definitions


def webhook_trigger(
    *,
    version: int = 1,
    retry: dict[str, Any] | None = NO_RETRY,
    unsubscribe_key: str = "uri",
    signature: dict[str, Any] | None = None,
    runs: int | None = None,
) -> dict[str, Any]:
    """An ``HttpWebhook`` trigger that hands its callback URL to the target on subscribe and
    unsubscribe; ``version`` changes the definition without changing what it does."""
    subscribe: dict[str, Any] = {
        "method": "POST",
        "uri": SUBSCRIBE_URI,
        "body": {"callbackUrl": "@listCallbackUrl()", "version": version},
    }
    if retry is not None:
        subscribe["retryPolicy"] = retry
    unsubscribe = {"method": "POST", unsubscribe_key: UNSUBSCRIBE_URI, "body": {"callbackUrl": "@listCallbackUrl()"}}
    trigger: dict[str, Any] = {"type": "HttpWebhook", "inputs": {"subscribe": subscribe, "unsubscribe": unsubscribe}}
    return _configured(trigger, signature, runs)


def polling_trigger(
    uri: str = f"{POLL_URI}?triggerState=0", *, frequency: str = "Minute", interval: int = 1
) -> dict[str, Any]:
    """A polling (``Http`` + ``recurrence``) trigger."""
    return {
        "type": "Http",
        "inputs": {"method": "GET", "uri": uri},
        "recurrence": {"frequency": frequency, "interval": interval},
    }


def manual_trigger(*, signature: dict[str, Any] | None = None, runs: int | None = None) -> dict[str, Any]:
    return _configured(request_trigger(), signature, runs)


def _configured(trigger: dict[str, Any], signature: dict[str, Any] | None, runs: int | None) -> dict[str, Any]:
    if signature is not None:
        trigger["signature"] = signature
    if runs is not None:
        trigger["runtimeConfiguration"] = {"concurrency": {"runs": runs}}
    return trigger


def workflow_body(
    trigger: dict[str, Any],
    actions: dict[str, Any] | None = None,
    *,
    trigger_name: str = "on_event",
    state: str = "Enabled",
) -> dict[str, Any]:
    """The body of a ``PUT /api/workflows/{name}`` with one trigger."""
    return put_body(definition(actions or {}, triggers={trigger_name: trigger}), state=state)


def waiting_action() -> dict[str, Any]:
    """A webhook action (its own subscribe address) that keeps a run in progress until called back."""
    return {"W": webhook_action(subscribe_uri=ACTION_SUBSCRIBE_URI, with_unsubscribe=False)}


# --------------------------------------------------------------------------- trigger URLs


@dataclass(frozen=True)
class TriggerAddress:
    """A trigger URL taken apart the way the Functions route hands it to the registry."""

    url: str
    workflow: str
    trigger: str
    query: dict[str, str]


def parse_trigger_url(url: str) -> TriggerAddress:
    """Split ``.../api/callbacks/workflows/{workflow}/triggers/{trigger}?...`` into decoded parts."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    at = segments.index("workflows")
    assert segments[at + 2] == "triggers", url
    return TriggerAddress(
        url=url,
        workflow=unquote(segments[at + 1]),
        trigger=unquote(segments[at + 3]),
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )


def with_query(address: TriggerAddress, **changes: str) -> TriggerAddress:
    return TriggerAddress(address.url, address.workflow, address.trigger, {**address.query, **changes})


# --------------------------------------------------------------------------- a polled feed


@dataclass
class Feed:
    """A polling source like the Logic Apps PollTriggerController sample.

    With a ``triggerState`` cursor before the end it answers ``200`` with one item, the next
    cursor in a relative ``Location`` and ``Retry-After: 0`` while more are waiting (``idle``
    after the last one); at the end, ``202`` with the cursor unchanged. Each poll takes 10 ms.
    """

    clock: FakeClock
    items: list[Any] = field(default_factory=list)
    idle: str | None = "15"
    polled: list[str] = field(default_factory=list)

    def __call__(self, request: OutboundRequest) -> OutboundResponse:
        self.polled.append(request.url)
        self.clock.advance(0.01)
        state = dict(parse_qsl(urlsplit(request.url).query)).get("triggerState")
        cursor = int(state) if state is not None else 0
        headers = {"Location": f"/poll?triggerState={cursor}"}
        if state is None or cursor >= len(self.items):
            if self.idle is not None:
                headers["Retry-After"] = self.idle
            return respond(202, None, headers)
        headers["Location"] = f"/poll?triggerState={cursor + 1}"
        more = cursor + 1 < len(self.items)
        if more:
            headers["Retry-After"] = "0"
        elif self.idle is not None:
            headers["Retry-After"] = self.idle
        return respond(200, self.items[cursor], {**headers, "Content-Type": "application/json"})


# --------------------------------------------------------------------------- the harness


@dataclass
class Harness:
    """An engine and a workflow registry on in-memory adapters, with the steps tests take."""

    store: MemoryStore
    sender: FakeSender
    clock: FakeClock
    engine: Engine
    workflows: Workflows
    # Workflow writes of a trigger that needs the clock but had no alarm in the index yet.
    violations: list[str] = field(default_factory=list)

    # -- workflows

    def put(self, body: dict[str, Any], name: str = "wf") -> StoredWorkflow:
        stored, _ = self.workflows.put(name, body, BASE_URL)
        return stored

    def shown(self, name: str = "wf") -> dict[str, Any]:
        return self.workflows.render(self.workflows.get(name))

    def trigger(self, name: str = "wf") -> dict[str, Any]:
        shown = self.shown(name)["trigger"]
        assert isinstance(shown, dict)
        return shown

    def state(self, name: str = "wf") -> TriggerState:
        stored = self.store.get_workflow(name)
        assert stored is not None
        assert stored.trigger is not None
        return TriggerState.model_validate(stored.trigger)

    def trigger_url(self, name: str = "wf") -> str:
        url = self.trigger(name)["callbackUrl"]
        assert isinstance(url, str)
        return url

    # -- trigger callbacks

    def post(
        self,
        url: str | TriggerAddress,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> RunRecord:
        address = url if isinstance(url, TriggerAddress) else parse_trigger_url(url)
        request = inbound(
            {"event": 1} if body is None and raw is None else body, headers=headers, raw=raw, url=address.url
        )
        run, _ = self.workflows.receive_trigger_callback(address.workflow, address.trigger, address.query, request)
        return run

    def runs(self, name: str = "wf") -> list[RunRecord]:
        summaries, _ = self.store.list_runs(name, status=None, top=1000, continuation=None)
        out = []
        for summary in summaries:
            loaded = self.store.load_run(summary.id)
            assert loaded is not None
            out.append(loaded.run)
        return sorted(out, key=lambda r: r.start_time)

    def run(self, run_id: str) -> RunRecord:
        loaded = self.store.load_run(run_id)
        assert loaded is not None
        return loaded.run

    # -- the targets

    def subscribes(self) -> list[OutboundRequest]:
        return self.sender.to(SUBSCRIBE_URI)

    def unsubscribes(self) -> list[OutboundRequest]:
        return self.sender.to(UNSUBSCRIBE_URI)

    def subscription_calls(self) -> list[tuple[str, str]]:
        """``("subscribe" | "unsubscribe", callback URL)`` in the order the target received them."""
        calls = []
        for request in self.sender.requests:
            base = request.url.split("?", 1)[0]
            if base in (SUBSCRIBE_URI, UNSUBSCRIBE_URI):
                assert isinstance(request.body, dict)
                calls.append(("subscribe" if base == SUBSCRIBE_URI else "unsubscribe", request.body["callbackUrl"]))
        return calls

    def polls(self) -> list[OutboundRequest]:
        return self.sender.to(POLL_URI)

    # -- the clock

    def at(self, seconds: float) -> datetime:
        """Move the clock to ``seconds`` after the epoch the tests start at (never backwards)."""
        when = EPOCH + timedelta(seconds=seconds)
        assert when >= self.clock.now, "the clock never goes back"
        self.clock.now = when
        return when

    def sweep_at(self, seconds: float) -> SweepReport:
        self.at(seconds)
        return self.engine.sweep()

    def past_lease(self) -> None:
        """Let every lease and every claim taken so far run out."""
        self.clock.now += self.engine.lease + timedelta(seconds=1)

    def alarms(self, name: str = "wf") -> list[DueItem]:
        """The due items of a workflow's trigger, however far ahead."""
        return [i for i in self.store.due_items(FAR_FUTURE, 1000) if i.run_id == ALARM_PREFIX + name]


def needs_alarm(stored: StoredWorkflow | None) -> bool:
    if stored is None or stored.trigger is None or stored.state != "Enabled":
        return False
    return TriggerState.model_validate(stored.trigger).status in ("Polling", "Failed")


def check_trigger_alarm(h: Harness, name: str = "wf") -> None:
    """The trigger alarm rule: a polling or ``Failed`` trigger of an enabled workflow has its
    alarm in the index, at or before the time it needs the clock (a time already past is now)."""
    assert h.violations == []
    stored = h.store.get_workflow(name)
    if not needs_alarm(stored):
        return
    state = h.state(name)
    assert state.alarm_at is not None, f"{state.status} trigger of {name!r} has no alarm"
    assert state.next_time is not None, f"{state.status} trigger of {name!r} has no next time"
    keys = {i.keys for i in h.alarms(name)}
    assert due_keys(ALARM_PREFIX + name, state.alarm_at) in keys, f"the alarm of {name!r} is not in the index"
    assert state.alarm_at <= max(state.next_time, h.clock.now)


def watch_workflow_writes(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every workflow write whose trigger needs an alarm that is not in the index yet."""
    create, replace = h.store.create_workflow, h.store.replace_workflow

    def check(name: str, doc: dict[str, Any]) -> None:
        trigger = doc.get("trigger")
        if doc.get("state") != "Enabled" or trigger is None:
            return
        state = TriggerState.model_validate(trigger)
        if state.status not in ("Polling", "Failed"):
            return
        if state.alarm_at is None:
            h.violations.append(f"{state.status} trigger of {name!r} written without an alarm")
            return
        keys = {i.keys for i in h.store.due_items(FAR_FUTURE, 1000)}
        if due_keys(ALARM_PREFIX + name, state.alarm_at) not in keys:
            h.violations.append(f"{state.status} trigger of {name!r} written before its alarm existed")

    def create_workflow(name: str, doc: dict[str, Any]) -> StoredWorkflow:
        check(name, doc)
        return create(name, doc)

    def replace_workflow(stored: StoredWorkflow, doc: dict[str, Any]) -> StoredWorkflow:
        check(stored.name, doc)
        return replace(stored, doc)

    monkeypatch.setattr(h.store, "create_workflow", create_workflow)
    monkeypatch.setattr(h.store, "replace_workflow", replace_workflow)


def build_harness(store: MemoryStore, sender: FakeSender, clock: FakeClock) -> tuple[Engine, Workflows]:
    """An engine and its registry (a process, as it starts) over the given adapters."""
    engine = Engine(
        store,
        sender,
        CallbackSigner([SIGNING_KEY]),
        max_body_bytes=MAX_BODY,
        clock=clock,
        lease=LEASE,
        rand=lowest,
        env=ENV,
    )
    return engine, Workflows(engine, env=ENV)


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Harness:
    store, sender, clock = MemoryStore(), FakeSender(), FakeClock()
    engine, workflows = build_harness(store, sender, clock)
    assert engine.workflow_waker is not None
    harness = Harness(store=store, sender=sender, clock=clock, engine=engine, workflows=workflows)
    watch_workflow_writes(harness, monkeypatch)
    return harness


@pytest.fixture
def feed(h: Harness) -> Feed:
    source = Feed(h.clock)
    h.sender.route(POLL_URI, source)
    return source


def bodies(runs: Sequence[RunRecord]) -> list[Any]:
    return [r.trigger.outputs["body"] for r in runs]


# --------------------------------------------------------------------------- signing helpers


def github_headers(body: bytes, delivery: str, *, secret: str = GITHUB_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign_github(secret.encode(), body),
        "X-GitHub-Delivery": delivery,
    }


def standard_headers(body: bytes, msg_id: str, now: datetime, *, secret: str = STANDARD_SECRET) -> dict[str, str]:
    timestamp = int(now.timestamp())
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard_webhooks(secret, msg_id, timestamp, body),
    }


def hmac_headers(body: bytes, delivery: str, *, secret: str = HMAC_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Signature": f"sha256={digest}", "X-Delivery-Id": delivery}


# =========================================================================== 1. lifecycle


class TestWorkflowLifecycle:
    def test_put_creates_then_replaces(self, h: Harness) -> None:
        """A first PUT creates the workflow (version 1), a second replaces it and keeps its creation time."""
        stored, created = h.workflows.put("wf", workflow_body(manual_trigger()), BASE_URL)
        assert created is True
        assert stored.version == 1
        h.clock.advance(60)

        _, created_again = h.workflows.put("wf", workflow_body(manual_trigger(runs=3)), BASE_URL)

        assert created_again is False
        shown = h.shown()
        assert shown["version"] == 2
        assert shown["createdTime"] == iso(EPOCH)
        assert shown["changedTime"] == iso(h.clock.now)
        assert shown["definition"]["triggers"]["on_event"]["runtimeConfiguration"] == {"concurrency": {"runs": 3}}

    def test_get_shows_the_workflow_and_its_trigger_state(self, h: Harness) -> None:
        """GET shows the definition, the workflow's state and its trigger's state."""
        h.put(workflow_body(webhook_trigger()))

        shown = h.shown()

        assert shown["name"] == "wf"
        assert shown["state"] == "Enabled"
        assert shown["definition"]["triggers"]["on_event"]["type"] == "HttpWebhook"
        trigger = shown["trigger"]
        assert trigger["name"] == "on_event"
        assert trigger["type"] == "HttpWebhook"
        assert trigger["status"] == "Subscribed"
        assert trigger["subscribedTime"] == iso(EPOCH)
        assert trigger["lastError"] is None
        assert trigger["nextTime"] is None

    def test_get_of_an_unknown_workflow_is_not_found(self, h: Harness) -> None:
        """GET of a workflow that does not exist answers 404."""
        with pytest.raises(NotFound) as caught:
            h.workflows.get("nope")
        assert caught.value.status == 404

    def test_invalid_name_is_a_bad_request(self, h: Harness) -> None:
        """A workflow name that breaks the naming rule answers 400 and saves nothing."""
        with pytest.raises(BadRequest):
            h.workflows.put("-bad name", workflow_body(manual_trigger()), BASE_URL)
        assert h.store.list_workflows() == []

    def test_list_shows_every_workflow_with_its_trigger(self, h: Harness) -> None:
        """GET list shows every workflow, by name, each with its state and trigger state."""
        h.put(workflow_body(manual_trigger()), name="beta")
        h.put(workflow_body(webhook_trigger(), state="Disabled"), name="alpha")
        h.put(workflow_body(polling_trigger()), name="gamma")

        shown = [h.workflows.render(w) for w in h.store.list_workflows()]

        assert [w["name"] for w in shown] == ["alpha", "beta", "gamma"]
        assert [w["state"] for w in shown] == ["Disabled", "Enabled", "Enabled"]
        assert [w["trigger"]["status"] for w in shown] == ["Disabled", "Ready", "Polling"]

    def test_delete_removes_the_workflow(self, h: Harness) -> None:
        """After DELETE the workflow is gone from GET and from the list; a second DELETE is 404."""
        h.put(workflow_body(manual_trigger()))

        h.workflows.delete("wf")

        with pytest.raises(NotFound):
            h.workflows.get("wf")
        assert h.store.list_workflows() == []
        with pytest.raises(NotFound):
            h.workflows.delete("wf")

    def test_disable_and_enable_change_the_workflow_and_trigger_state(self, h: Harness) -> None:
        """Disable and enable show in the workflow's state and in its trigger's state."""
        h.put(workflow_body(webhook_trigger()))

        disabled = h.workflows.render(h.workflows.set_state("wf", enabled=False))
        assert disabled["state"] == "Disabled"
        assert disabled["trigger"]["status"] == "Disabled"

        enabled = h.workflows.render(h.workflows.set_state("wf", enabled=True))
        assert enabled["state"] == "Enabled"
        assert enabled["trigger"]["status"] == "Subscribed"
        assert h.shown()["state"] == "Enabled"

    def test_enabling_an_enabled_workflow_changes_nothing(self, h: Harness) -> None:
        """Enable on an enabled workflow neither writes nor subscribes again."""
        stored = h.put(workflow_body(webhook_trigger()))

        again = h.workflows.set_state("wf", enabled=True)

        assert again.etag == stored.etag
        assert len(h.subscribes()) == 1

    def test_enable_or_disable_of_an_unknown_workflow_is_not_found(self, h: Harness) -> None:
        """Enable and disable of a workflow that does not exist answer 404."""
        with pytest.raises(NotFound):
            h.workflows.set_state("nope", enabled=True)
        with pytest.raises(NotFound):
            h.workflows.set_state("nope", enabled=False)

    def test_polling_trigger_shows_its_next_and_last_poll(self, h: Harness, feed: Feed) -> None:
        """A polling trigger's state shows when it polled last and when it polls next."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        assert h.trigger()["status"] == "Polling"
        assert h.trigger()["nextTime"] == iso(EPOCH)

        h.sweep_at(0)

        trigger = h.trigger()
        assert trigger["lastPollTime"] == iso(EPOCH + timedelta(seconds=0.01))
        assert trigger["nextTime"] == iso(EPOCH + timedelta(seconds=15.01))
        assert trigger["lastError"] is None


# =========================================================================== 2. HttpWebhook trigger


class TestWebhookTriggerSubscription:
    def test_saving_an_enabled_workflow_subscribes_with_the_callback_url(self, h: Harness) -> None:
        """Saving an enabled workflow subscribes once, with ``@listCallbackUrl()`` as the trigger's URL."""
        h.put(workflow_body(webhook_trigger()))

        (call,) = h.subscribes()
        assert isinstance(call.body, dict)
        assert call.method == "POST"
        assert call.body == {"callbackUrl": h.trigger_url(), "version": 1}
        address = parse_trigger_url(call.body["callbackUrl"])
        assert (address.workflow, address.trigger) == ("wf", "on_event")
        assert call.body["callbackUrl"].startswith(f"{BASE_URL}/api/callbacks/workflows/wf/triggers/on_event?")
        assert call.headers["x-ms-workflow-name"] == "wf"
        assert h.trigger()["status"] == "Subscribed"

    def test_saving_a_disabled_workflow_does_not_subscribe(self, h: Harness) -> None:
        """A workflow saved ``Disabled`` calls nothing until it is enabled."""
        h.put(workflow_body(webhook_trigger(), state="Disabled"))

        assert h.sender.requests == []
        assert h.trigger()["status"] == "Disabled"

    def test_enabling_subscribes(self, h: Harness) -> None:
        """Enabling a disabled workflow subscribes with the trigger's callback URL."""
        h.put(workflow_body(webhook_trigger(), state="Disabled"))

        h.workflows.set_state("wf", enabled=True)

        assert h.subscription_calls() == [("subscribe", h.trigger_url())]
        assert h.trigger()["status"] == "Subscribed"

    def test_disabling_unsubscribes_with_the_subscribed_url(self, h: Harness) -> None:
        """Disabling unsubscribes, with the same URL the subscribe was given."""
        h.put(workflow_body(webhook_trigger()))
        url = h.trigger_url()

        h.workflows.set_state("wf", enabled=False)

        assert h.subscription_calls() == [("subscribe", url), ("unsubscribe", url)]

    def test_deleting_unsubscribes_with_the_subscribed_url(self, h: Harness) -> None:
        """Deleting unsubscribes, with the same URL the subscribe was given."""
        h.put(workflow_body(webhook_trigger()))
        url = h.trigger_url()

        h.workflows.delete("wf")

        assert h.subscription_calls() == [("subscribe", url), ("unsubscribe", url)]

    def test_replacing_unsubscribes_first_then_subscribes_anew(self, h: Harness) -> None:
        """A replaced definition: subscribe, then unsubscribe (same URL), then a fresh subscribe."""
        h.put(workflow_body(webhook_trigger(version=1)))
        first = h.trigger_url()

        h.put(workflow_body(webhook_trigger(version=2)))

        second = h.trigger_url()
        assert h.subscription_calls() == [("subscribe", first), ("unsubscribe", first), ("subscribe", second)]
        assert second != first
        assert h.subscribes()[-1].body == {"callbackUrl": second, "version": 2}
        assert h.trigger()["status"] == "Subscribed"

    def test_unsubscribe_address_may_be_spelled_url(self, h: Harness) -> None:
        """An ``unsubscribe`` with ``url`` (the older spelling) is called like one with ``uri``."""
        h.put(workflow_body(webhook_trigger(unsubscribe_key="url")))
        url = h.trigger_url()

        h.workflows.set_state("wf", enabled=False)

        assert h.subscription_calls() == [("subscribe", url), ("unsubscribe", url)]

    def test_disabling_a_disabled_workflow_calls_nothing(self, h: Harness) -> None:
        """Disabling twice unsubscribes once."""
        h.put(workflow_body(webhook_trigger()))
        h.workflows.set_state("wf", enabled=False)

        h.workflows.set_state("wf", enabled=False)

        assert len(h.unsubscribes()) == 1

    def test_reenabling_subscribes_with_a_new_url(self, h: Harness) -> None:
        """Disable then enable: the new subscription has a URL of its own; the old one is Gone."""
        h.put(workflow_body(webhook_trigger()))
        old = h.trigger_url()
        h.workflows.set_state("wf", enabled=False)

        h.workflows.set_state("wf", enabled=True)

        new = h.trigger_url()
        assert h.subscription_calls() == [("subscribe", old), ("unsubscribe", old), ("subscribe", new)]
        with pytest.raises(Gone):
            h.post(old)
        assert h.runs() == []


class TestWebhookTriggerCallbacks:
    def test_every_post_starts_a_run_with_the_request_headers_and_body(self, h: Harness) -> None:
        """Each POST to the callback URL starts its own run; trigger outputs are its headers and body."""
        h.put(workflow_body(webhook_trigger()))
        url = h.trigger_url()

        first = h.post(url, {"n": 1}, headers={"X-Source": "unit"})
        second = h.post(url, {"n": 2})

        assert first.id != second.id
        assert {r.id for r in h.runs()} == {first.id, second.id}
        stored = h.run(first.id)
        assert stored.status == RunStatus.SUCCEEDED
        assert stored.trigger.name == "on_event"
        assert stored.trigger.outputs["body"] == {"n": 1}
        assert stored.trigger.outputs["headers"]["X-Source"] == "unit"
        assert set(stored.trigger.outputs) == {"headers", "body"}
        assert h.run(second.id).trigger.outputs["body"] == {"n": 2}

    def test_post_for_a_disabled_workflow_is_gone_and_starts_nothing(self, h: Harness) -> None:
        """A POST to the URL of a disabled workflow answers 410 and starts no run."""
        h.put(workflow_body(webhook_trigger()))
        url = h.trigger_url()
        h.workflows.set_state("wf", enabled=False)

        with pytest.raises(Gone) as caught:
            h.post(url)

        assert caught.value.status == 410
        assert h.runs() == []

    def test_post_for_a_deleted_workflow_is_not_found_and_starts_nothing(self, h: Harness) -> None:
        """A POST to the URL of a deleted workflow answers 404 and starts no run."""
        h.put(workflow_body(webhook_trigger()))
        url = h.trigger_url()
        h.workflows.delete("wf")

        with pytest.raises(NotFound) as caught:
            h.post(url)

        assert caught.value.status == 404
        assert h.runs() == []

    def test_url_from_before_a_replace_is_gone(self, h: Harness) -> None:
        """After a replace, the old subscription's URL answers 410; the new one starts runs."""
        h.put(workflow_body(webhook_trigger(version=1)))
        old = h.trigger_url()
        h.put(workflow_body(webhook_trigger(version=2)))

        with pytest.raises(Gone) as caught:
            h.post(old)
        assert caught.value.status == 410
        assert h.runs() == []

        run = h.post(h.trigger_url())
        assert [r.id for r in h.runs()] == [run.id]

    def test_tampered_url_is_unauthorized(self, h: Harness) -> None:
        """A trigger URL with a changed nonce or signature answers 401 and starts nothing."""
        h.put(workflow_body(webhook_trigger()))
        address = parse_trigger_url(h.trigger_url())

        for forged in (with_query(address, nonce="forged"), with_query(address, sig="AAAA")):
            with pytest.raises(Unauthorized) as caught:
                h.post(forged)
            assert caught.value.status == 401
        assert h.runs() == []

    def test_run_can_use_the_trigger_body(self, h: Harness) -> None:
        """Actions of a run started by the trigger read its outputs with ``triggerBody()``."""
        actions = {"W": webhook_action(subscribe_uri=ACTION_SUBSCRIBE_URI, subscribe_body="@triggerBody()")}
        h.put(workflow_body(webhook_trigger(), actions))

        h.post(h.trigger_url(), {"order": 42})

        (call,) = h.sender.to(ACTION_SUBSCRIBE_URI)
        assert call.body == {"order": 42}


class TestWebhookTriggerSubscribeFailure:
    def test_failed_subscribe_keeps_the_workflow_with_the_trigger_failed(self, h: Harness) -> None:
        """A subscribe answered 500 saves the workflow anyway: trigger ``Failed``, the error and the next try shown."""
        h.sender.route(SUBSCRIBE_URI, respond(500))

        stored, created = h.workflows.put("wf", workflow_body(webhook_trigger()), BASE_URL)

        assert created is True
        trigger = h.workflows.render(stored)["trigger"]
        assert trigger["status"] == "Failed"
        assert trigger["lastError"] == {"code": "UnexpectedStatusCode", "message": "the target answered 500"}
        assert trigger["nextTime"] == iso(EPOCH + timedelta(seconds=5))
        assert h.trigger() == trigger
        check_trigger_alarm(h)

    def test_subscribe_without_an_answer_is_a_failure_too(self, h: Harness) -> None:
        """A subscribe that gets no answer at all leaves the trigger ``Failed`` with that error."""

        def unreachable(request: OutboundRequest) -> OutboundResponse:
            raise OutboundError("ConnectionFailed", "the target could not be reached")

        h.sender.route(SUBSCRIBE_URI, unreachable)

        h.put(workflow_body(webhook_trigger()))

        assert h.trigger()["status"] == "Failed"
        assert h.trigger()["lastError"]["code"] == "ConnectionFailed"
        check_trigger_alarm(h)

    def test_timer_retries_after_next_time_and_subscribes(self, h: Harness) -> None:
        """No retry before ``nextTime``; after it, with the target fixed, the trigger is ``Subscribed``."""
        h.sender.route(SUBSCRIBE_URI, respond(503))
        h.put(workflow_body(webhook_trigger()))
        assert h.state().next_time == EPOCH + timedelta(seconds=5)

        h.sweep_at(4)
        assert len(h.subscribes()) == 1

        h.sender.route(SUBSCRIBE_URI, respond(200))
        h.sweep_at(5)

        assert len(h.subscribes()) == 2
        trigger = h.trigger()
        assert trigger["status"] == "Subscribed"
        assert trigger["lastError"] is None
        assert trigger["nextTime"] is None
        assert trigger["subscribedTime"] == iso(EPOCH + timedelta(seconds=5))
        assert h.alarms() == []
        # The URL it subscribed with is the trigger's URL, and it starts runs.
        body = h.subscribes()[-1].body
        assert isinstance(body, dict)
        assert body["callbackUrl"] == h.trigger_url()
        h.post(h.trigger_url())
        assert len(h.runs()) == 1

    def test_retries_back_off(self, h: Harness) -> None:
        """Each failed retry waits longer (default exponential policy), and every wait has its alarm."""
        h.sender.route(SUBSCRIBE_URI, respond(500))
        h.put(workflow_body(webhook_trigger()))
        waits = []
        for _ in range(5):
            state = h.state()
            assert state.next_time is not None
            check_trigger_alarm(h)
            h.clock.now = state.next_time
            h.engine.sweep()
            after = h.state()
            assert after.next_time is not None
            waits.append((after.next_time - h.clock.now).total_seconds())

        assert len(h.subscribes()) == 6
        assert waits == [7, 14, 28, 28, 28]
        assert h.state().failures == 6
        assert h.trigger()["status"] == "Failed"

    def test_subscribe_retry_policy_sets_the_back_off(self, h: Harness) -> None:
        """A fixed ``retryPolicy`` on subscribe sets the wait before each retry."""
        h.sender.route(SUBSCRIBE_URI, respond(500))

        h.put(workflow_body(webhook_trigger(retry={"type": "fixed", "count": 3, "interval": "PT30S"})))

        assert h.state().next_time == EPOCH + timedelta(seconds=30)
        check_trigger_alarm(h)

    def test_disabling_a_failed_trigger_stops_the_retries(self, h: Harness) -> None:
        """A disabled workflow's trigger alarm is dropped by the sweep, which calls nothing."""
        h.sender.route(SUBSCRIBE_URI, respond(500))
        h.put(workflow_body(webhook_trigger()))
        h.workflows.set_state("wf", enabled=False)
        calls = len(h.sender.requests)

        h.sweep_at(3600)

        assert len(h.sender.requests) == calls
        assert h.alarms() == []
        assert h.trigger()["status"] == "Disabled"

    def test_replacing_a_failed_trigger_subscribes_the_new_definition(self, h: Harness) -> None:
        """A replace of a ``Failed`` trigger unsubscribes nothing and subscribes the new definition."""
        h.sender.route(SUBSCRIBE_URI, respond(500))
        h.put(workflow_body(webhook_trigger(version=1)))
        h.sender.route(SUBSCRIBE_URI, respond(200))

        h.put(workflow_body(webhook_trigger(version=2)))

        assert h.unsubscribes() == []
        assert h.trigger()["status"] == "Subscribed"
        calls = len(h.sender.requests)
        h.sweep_at(3600)  # the old alarm is an orphan: dropped, nothing called
        assert len(h.sender.requests) == calls
        assert h.alarms() == []


# =========================================================================== 3. polling trigger


class TestPollingTrigger:
    def test_first_poll_is_due_when_the_workflow_is_saved(self, h: Harness, feed: Feed) -> None:
        """Saving an enabled polling workflow arms its alarm at once; the next sweep polls."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        assert h.polls() == []
        check_trigger_alarm(h)

        h.sweep_at(0)

        assert feed.polled == [f"{POLL_URI}?triggerState=0"]
        check_trigger_alarm(h)

    def test_200_starts_a_run_with_the_response_as_trigger_outputs(self, h: Harness, feed: Feed) -> None:
        """A ``200`` starts one run whose trigger outputs are the response's status, headers and body."""
        feed.items = [{"id": "a"}]
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        h.sweep_at(0)

        (run,) = h.runs()
        assert run.trigger.name == "poll"
        assert run.trigger.outputs["statusCode"] == 200
        assert run.trigger.outputs["body"] == {"id": "a"}
        assert run.trigger.outputs["headers"]["Location"] == "/poll?triggerState=1"
        assert run.status == RunStatus.SUCCEEDED

    def test_202_starts_no_run(self, h: Harness, feed: Feed) -> None:
        """A ``202`` (nothing new) starts no run and records no error."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        h.sweep_at(0)

        assert len(feed.polled) == 1
        assert h.runs() == []
        assert h.trigger()["lastError"] is None

    @pytest.mark.parametrize(
        ("frequency", "interval", "period"),
        [
            ("Second", 30, timedelta(seconds=30)),
            ("Minute", 5, timedelta(minutes=5)),
            ("Hour", 2, timedelta(hours=2)),
            ("Day", 1, timedelta(days=1)),
        ],
    )
    def test_timer_polls_when_due_by_the_recurrence(
        self, h: Harness, frequency: str, interval: int, period: timedelta
    ) -> None:
        """Without ``Retry-After`` the next poll is one recurrence later, not before."""
        h.sender.route(POLL_URI, respond(202))
        h.put(workflow_body(polling_trigger(frequency=frequency, interval=interval), trigger_name="poll"))
        h.sweep_at(0)
        assert h.state().next_time == EPOCH + period

        h.sweep_at((period - timedelta(seconds=1)).total_seconds())
        assert len(h.polls()) == 1
        check_trigger_alarm(h)

        h.sweep_at(period.total_seconds())
        assert len(h.polls()) == 2
        check_trigger_alarm(h)

    def test_relative_location_becomes_the_next_url(self, h: Harness, feed: Feed) -> None:
        """A relative ``Location`` is resolved against the polled URL and polled next."""
        h.put(workflow_body(polling_trigger(POLL_URI), trigger_name="poll"))

        h.sweep_at(0)  # no cursor yet: 202 with Location /poll?triggerState=0
        feed.items = [{"id": "a"}]
        h.sweep_at(15.01)

        assert feed.polled == [POLL_URI, f"{POLL_URI}?triggerState=0"]
        assert bodies(h.runs()) == [{"id": "a"}]
        h.sweep_at(31)
        assert feed.polled[-1] == f"{POLL_URI}?triggerState=1"

    def test_absolute_location_becomes_the_next_url(self, h: Harness) -> None:
        """An absolute ``Location`` (another host, too) is polled next, its query included."""
        elsewhere = "https://elsewhere.example/feed"
        h.sender.route(POLL_URI, respond(202, None, {"Location": f"{elsewhere}?cursor=abc"}))
        h.sender.route(elsewhere, respond(202))
        h.put(workflow_body(polling_trigger(POLL_URI), trigger_name="poll"))

        h.sweep_at(0)
        h.sweep_at(60)

        assert [r.url for r in h.sender.requests] == [POLL_URI, f"{elsewhere}?cursor=abc"]

    def test_without_location_the_same_url_is_polled_again(self, h: Harness) -> None:
        """An answer without ``Location`` leaves the URL to poll as it was."""
        h.sender.route(POLL_URI, respond(202))
        h.put(workflow_body(polling_trigger(f"{POLL_URI}?x=1"), trigger_name="poll"))

        h.sweep_at(0)
        h.sweep_at(60)

        assert [r.url for r in h.polls()] == [f"{POLL_URI}?x=1", f"{POLL_URI}?x=1"]

    def test_retry_after_sets_the_next_poll(self, h: Harness) -> None:
        """``Retry-After`` replaces the recurrence for the next poll."""
        h.sender.route(POLL_URI, respond(202, None, {"Retry-After": "42"}))
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        h.sweep_at(0)

        assert h.state().next_time == EPOCH + timedelta(seconds=42)
        h.sweep_at(41)
        assert len(h.polls()) == 1
        h.sweep_at(42)
        assert len(h.polls()) == 2
        check_trigger_alarm(h)

    def test_retry_after_zero_drains_what_is_waiting_in_one_wake(self, h: Harness, feed: Feed) -> None:
        """``Retry-After: 0`` polls again at once: one sweep starts a run per waiting item."""
        feed.items = [{"n": n} for n in range(5)]
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        report = h.sweep_at(0)

        assert report.done == 1
        assert len(feed.polled) == 5
        assert bodies(h.runs()) == feed.items
        check_trigger_alarm(h)
        assert h.state().next_time == h.clock.now + timedelta(seconds=15)

    def test_retry_after_zero_is_bounded_per_wake(self, h: Harness, feed: Feed) -> None:
        """At most ``MAX_POLLS_PER_WAKE`` polls in one wake; the rest are polled by the next sweep."""
        total = MAX_POLLS_PER_WAKE + 5
        feed.items = [{"n": n} for n in range(total)]
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        h.sweep_at(0)

        assert len(feed.polled) == MAX_POLLS_PER_WAKE
        assert bodies(h.runs()) == feed.items[:MAX_POLLS_PER_WAKE]
        check_trigger_alarm(h)
        due = h.state().next_time
        assert due is not None
        assert due <= h.clock.now  # more is waiting: due again at once

        h.sweep_at(1)

        assert len(feed.polled) == total
        assert bodies(h.runs()) == feed.items
        check_trigger_alarm(h)

    def test_poll_error_is_shown_and_starts_nothing(self, h: Harness) -> None:
        """An error answer starts no run and is shown as the last error; the next poll is a recurrence later."""
        h.sender.route(POLL_URI, respond(500))
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        h.sweep_at(0)

        assert h.runs() == []
        trigger = h.trigger()
        assert trigger["status"] == "Polling"
        assert trigger["lastError"] == {"code": "UnexpectedStatusCode", "message": "the target answered 500"}
        assert h.state().next_time == EPOCH + timedelta(minutes=1)
        check_trigger_alarm(h)

        h.sender.route(POLL_URI, respond(202))
        h.sweep_at(60)
        assert h.trigger()["lastError"] is None

    def test_poll_without_an_answer_is_shown_and_retried_by_the_recurrence(self, h: Harness) -> None:
        """A poll that gets no answer is shown as the last error and polled again a recurrence later."""

        def unreachable(request: OutboundRequest) -> OutboundResponse:
            raise OutboundError("ConnectionFailed", "the target could not be reached")

        h.sender.route(POLL_URI, unreachable)
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))

        h.sweep_at(0)

        assert h.trigger()["lastError"]["code"] == "ConnectionFailed"
        assert h.state().next_time == EPOCH + timedelta(minutes=1)
        check_trigger_alarm(h)

    def test_state_survives_a_restart(self, h: Harness, feed: Feed) -> None:
        """A new process on the same storage polls on from the stored cursor: nothing lost, nothing twice."""
        feed.items = [{"n": 0}, {"n": 1}]
        feed.idle = "15"
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        h.sweep_at(0)
        assert bodies(h.runs()) == feed.items

        feed.items.append({"n": 2})
        engine, workflows = build_harness(h.store, h.sender, h.clock)  # the restart
        h.at(30)
        engine.sweep()

        assert feed.polled[-1] == f"{POLL_URI}?triggerState=2"
        assert bodies(h.runs()) == feed.items
        assert workflows.render(workflows.get("wf"))["trigger"]["status"] == "Polling"
        check_trigger_alarm(h)

    def test_disabled_workflow_stops_polling_and_its_alarm_is_dropped(self, h: Harness, feed: Feed) -> None:
        """Disabling a polling workflow: the sweep drops its alarm and polls nothing; enabling polls again."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        h.sweep_at(0)
        h.workflows.set_state("wf", enabled=False)

        h.sweep_at(3600)

        assert len(feed.polled) == 1
        assert h.alarms() == []
        assert h.trigger()["status"] == "Disabled"

        h.workflows.set_state("wf", enabled=True)
        check_trigger_alarm(h)
        h.sweep_at(3600)
        assert len(feed.polled) == 2

    def test_deleting_a_polling_workflow_removes_its_alarm(self, h: Harness, feed: Feed) -> None:
        """A deleted polling workflow leaves no alarm behind and is never polled again."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        h.sweep_at(0)

        h.workflows.delete("wf")

        assert h.alarms() == []
        h.sweep_at(3600)
        assert len(feed.polled) == 1

    def test_run_started_by_a_poll_hands_out_callback_urls_of_hookflow(self, h: Harness, feed: Feed) -> None:
        """A webhook action in a run started by a poll gets a callback URL on Hookflow's base URL, not the feed's."""
        feed.items = [{"id": "a"}]
        h.put(workflow_body(polling_trigger(), waiting_action(), trigger_name="poll"))

        h.sweep_at(0)

        (call,) = h.sender.to(ACTION_SUBSCRIBE_URI)
        assert isinstance(call.body, dict)
        assert call.body["callbackUrl"].startswith(f"{BASE_URL}/api/callbacks/runs/")


class TestPollingCrashes:
    @pytest.mark.parametrize("waiting", [1, 3], ids=["last-item", "more-waiting"])
    def test_crash_between_the_run_start_and_the_cursor_write(self, h: Harness, feed: Feed, waiting: int) -> None:
        """The workflow write after a poll's run was created fails; later sweeps leave exactly one run per item."""
        feed.items = [{"n": n} for n in range(waiting)]
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        runs_table, workflows_table = h.store.table("runs"), h.store.table("workflows")
        run_created: list[str] = []
        crashed: list[str] = []

        def hook(table: str, ops: Sequence[Op]) -> None:
            if crashed:
                return
            if table == runs_table and any(op.kind == "create" and op.row.row_key == "run" for op in ops):
                run_created.append(ops[0].row.partition_key)
            elif run_created and table == workflows_table and any(op.row.row_key == "wf" for op in ops):
                crashed.append("fired")
                raise StorageDown("the workflow write after the run failed")

        h.store.before_submit = hook

        report = h.sweep_at(0)

        assert crashed == ["fired"]
        assert report.failed == 1
        before = bodies(h.runs())  # the items drained before the cursor write that failed
        assert before == feed.items[: len(before)]
        assert before
        h.store.before_submit = None

        h.past_lease()  # the crashed sweep's claim runs out
        h.engine.sweep()
        h.clock.advance(60)
        h.engine.sweep()

        delivered = bodies(h.runs())
        assert [delivered.count(item) for item in feed.items] == [1] * waiting, f"runs per item: {delivered}"
        check_trigger_alarm(h)

    def test_crash_between_reading_a_200_and_creating_its_run(self, h: Harness, feed: Feed) -> None:
        """The run's own write fails after a ``200``; a later sweep starts that item's run once."""
        feed.items = [{"n": 0}]
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        runs_table = h.store.table("runs")
        fired: list[bool] = []

        def hook(table: str, ops: Sequence[Op]) -> None:
            if not fired and table == runs_table and any(op.kind == "create" and op.row.row_key == "run" for op in ops):
                fired.append(True)
                raise StorageDown("the run write failed")

        h.store.before_submit = hook

        report = h.sweep_at(0)

        assert fired == [True]
        assert report.failed == 1
        assert h.runs() == []
        h.store.before_submit = None

        h.past_lease()
        h.engine.sweep()

        assert bodies(h.runs()) == [{"n": 0}]
        check_trigger_alarm(h)


# =========================================================================== 4. Request trigger URL


class TestRequestTriggerUrl:
    def test_get_shows_a_signed_invoke_url(self, h: Harness) -> None:
        """GET shows a signed invoke URL for a ``Request`` trigger, on the base URL the workflow was saved with."""
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))

        url = h.trigger_url()

        assert url.startswith(f"{BASE_URL}/api/callbacks/workflows/wf/triggers/manual?")
        address = parse_trigger_url(url)
        assert {"sv", "nonce", "sig"} <= set(address.query)
        assert h.trigger()["status"] == "Ready"

    def test_post_to_the_invoke_url_starts_a_run(self, h: Harness) -> None:
        """A POST to the invoke URL (nothing but the URL's own signature) starts a run with its headers and body."""
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))

        run = h.post(h.trigger_url(), {"hello": "world"})

        (stored,) = h.runs()
        assert stored.id == run.id
        assert stored.trigger.outputs["body"] == {"hello": "world"}

    def test_invoke_url_stays_the_same_across_saves(self, h: Harness) -> None:
        """Saving the workflow again keeps its invoke URL working, like a Logic Apps trigger URL."""
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        url = h.trigger_url()

        h.put(workflow_body(manual_trigger(runs=5), trigger_name="manual"))

        assert h.trigger_url() == url
        h.post(url)
        assert len(h.runs()) == 1

    def test_invoke_url_of_a_disabled_workflow_is_gone(self, h: Harness) -> None:
        """The invoke URL of a disabled workflow answers 410 and starts nothing."""
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        url = h.trigger_url()
        h.workflows.set_state("wf", enabled=False)

        with pytest.raises(Gone):
            h.post(url)
        assert h.runs() == []

    def test_forged_invoke_url_is_unauthorized(self, h: Harness) -> None:
        """An invoke URL for another workflow name, or without its signature, answers 401."""
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        h.put(workflow_body(manual_trigger(), trigger_name="manual"), name="other")
        address = parse_trigger_url(h.trigger_url())

        moved = TriggerAddress(address.url, "other", address.trigger, address.query)
        unsigned = TriggerAddress(
            address.url, "wf", address.trigger, {k: v for k, v in address.query.items() if k != "sig"}
        )
        for forged in (moved, unsigned):
            with pytest.raises(Unauthorized):
                h.post(forged)
        assert h.runs() == []
        assert h.runs("other") == []


# =========================================================================== 5. signed inbound webhooks


class TestSignedTriggerCallbacks:
    RAW = b'{"action":"opened","number":7}'

    def test_github_signed_post_starts_a_run(self, h: Harness) -> None:
        """A POST with a valid ``X-Hub-Signature-256`` starts a run."""
        h.put(workflow_body(webhook_trigger(signature=GITHUB_SIGNATURE)))

        run = h.post(h.trigger_url(), raw=self.RAW, headers=github_headers(self.RAW, "d-1"))

        assert h.run(run.id).trigger.outputs["body"] == {"action": "opened", "number": 7}

    def test_github_docs_test_vector_verifies(self, h: Harness) -> None:
        """GitHub's documented example (secret, ``Hello, World!``, signature) is accepted."""
        h.put(workflow_body(manual_trigger(signature=GITHUB_SIGNATURE), trigger_name="manual"))
        headers = {
            "Content-Type": "text/plain",
            "X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "X-GitHub-Delivery": "docs",
        }

        h.post(h.trigger_url(), raw=b"Hello, World!", headers=headers)

        assert len(h.runs()) == 1

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param(github_headers(RAW, "d-1", secret="wrong secret"), id="wrong-secret"),
            pytest.param(github_headers(b'{"action":"closed"}', "d-1"), id="other-body"),
            pytest.param({"Content-Type": "application/json", "X-GitHub-Delivery": "d-1"}, id="missing"),
        ],
    )
    def test_bad_github_signature_is_unauthorized_and_starts_nothing(self, h: Harness, headers: dict[str, str]) -> None:
        """A wrong, mismatched or missing GitHub signature answers 401 and starts no run."""
        h.put(workflow_body(webhook_trigger(signature=GITHUB_SIGNATURE)))

        with pytest.raises(Unauthorized) as caught:
            h.post(h.trigger_url(), raw=self.RAW, headers=headers)

        assert caught.value.status == 401
        assert h.runs() == []

    def test_github_redelivery_starts_no_second_run(self, h: Harness) -> None:
        """The same ``X-GitHub-Delivery`` again answers with the first run; a new delivery id starts a new run."""
        h.put(workflow_body(webhook_trigger(signature=GITHUB_SIGNATURE)))
        url = h.trigger_url()

        first = h.post(url, raw=self.RAW, headers=github_headers(self.RAW, "d-1"))
        h.clock.advance(30)
        again = h.post(url, raw=self.RAW, headers=github_headers(self.RAW, "d-1"))

        assert again.id == first.id
        assert len(h.runs()) == 1
        other = h.post(url, raw=self.RAW, headers=github_headers(self.RAW, "d-2"))
        assert other.id != first.id
        assert len(h.runs()) == 2

    def test_bad_redelivery_is_unauthorized(self, h: Harness) -> None:
        """A redelivery id with a bad signature answers 401, not the first run."""
        h.put(workflow_body(webhook_trigger(signature=GITHUB_SIGNATURE)))
        url = h.trigger_url()
        h.post(url, raw=self.RAW, headers=github_headers(self.RAW, "d-1"))

        with pytest.raises(Unauthorized):
            h.post(url, raw=self.RAW, headers=github_headers(self.RAW, "d-1", secret="wrong"))
        assert len(h.runs()) == 1

    def test_standard_webhooks_signed_post_starts_a_run(self, h: Harness) -> None:
        """A POST with a valid Standard Webhooks signature starts a run."""
        h.put(workflow_body(webhook_trigger(signature=STANDARD_SIGNATURE)))

        h.post(h.trigger_url(), raw=self.RAW, headers=standard_headers(self.RAW, "msg_1", h.clock.now))

        assert len(h.runs()) == 1

    def test_standard_webhooks_redelivery_starts_no_second_run(self, h: Harness) -> None:
        """The same ``webhook-id`` (re-signed with a later timestamp) answers with the first run."""
        h.put(workflow_body(webhook_trigger(signature=STANDARD_SIGNATURE)))
        url = h.trigger_url()

        first = h.post(url, raw=self.RAW, headers=standard_headers(self.RAW, "msg_1", h.clock.now))
        h.clock.advance(60)
        again = h.post(url, raw=self.RAW, headers=standard_headers(self.RAW, "msg_1", h.clock.now))

        assert again.id == first.id
        assert len(h.runs()) == 1

    @pytest.mark.parametrize("skew", [-301, 301])
    def test_standard_webhooks_timestamp_out_of_tolerance_is_unauthorized(self, h: Harness, skew: int) -> None:
        """A Standard Webhooks message signed more than 5 minutes away from now answers 401."""
        h.put(workflow_body(webhook_trigger(signature=STANDARD_SIGNATURE)))
        headers = standard_headers(self.RAW, "msg_1", h.clock.now + timedelta(seconds=skew))

        with pytest.raises(Unauthorized) as caught:
            h.post(h.trigger_url(), raw=self.RAW, headers=headers)

        assert caught.value.code == "TimestampOutOfTolerance"
        assert h.runs() == []

    def test_bad_standard_webhooks_signature_is_unauthorized(self, h: Harness) -> None:
        """A Standard Webhooks message signed with another secret answers 401."""
        h.put(workflow_body(webhook_trigger(signature=STANDARD_SIGNATURE)))
        other = "whsec_" + base64.b64encode(b"another key").decode()

        with pytest.raises(Unauthorized):
            h.post(h.trigger_url(), raw=self.RAW, headers=standard_headers(self.RAW, "m", h.clock.now, secret=other))
        assert h.runs() == []

    def test_generic_hmac_header(self, h: Harness) -> None:
        """A generic HMAC header verifies; its id header de-duplicates; a bad one answers 401."""
        h.put(workflow_body(webhook_trigger(signature=HMAC_SIGNATURE)))
        url = h.trigger_url()

        first = h.post(url, raw=self.RAW, headers=hmac_headers(self.RAW, "x-1"))
        again = h.post(url, raw=self.RAW, headers=hmac_headers(self.RAW, "x-1"))
        assert again.id == first.id

        with pytest.raises(Unauthorized):
            h.post(url, raw=self.RAW, headers=hmac_headers(self.RAW, "x-2", secret="wrong"))
        assert len(h.runs()) == 1

    def test_signed_request_trigger(self, h: Harness) -> None:
        """A ``Request`` trigger may declare a signature too: unsigned POSTs to its URL answer 401."""
        h.put(workflow_body(manual_trigger(signature=GITHUB_SIGNATURE), trigger_name="manual"))
        url = h.trigger_url()

        with pytest.raises(Unauthorized):
            h.post(url, raw=self.RAW, headers={"Content-Type": "application/json"})
        h.post(url, raw=self.RAW, headers=github_headers(self.RAW, "d-9"))
        assert len(h.runs()) == 1


class TestSignedWebhookAction:
    RAW = b'{"approved":true}'

    def start_waiting(self, h: Harness) -> RunRecord:
        action = webhook_action(subscribe_uri=ACTION_SUBSCRIBE_URI, with_unsubscribe=False)
        action["signature"] = GITHUB_SIGNATURE
        h.put(workflow_body(manual_trigger(), {"W": action}, trigger_name="manual"))
        run = h.post(h.trigger_url())
        assert run.status == RunStatus.WAITING
        return run

    def callback(self, h: Harness, headers: dict[str, str]) -> RunRecord:
        (call,) = h.sender.to(ACTION_SUBSCRIBE_URI)
        assert isinstance(call.body, dict)
        address = parse_callback_url(call.body["callbackUrl"])
        request = callback_request(address, raw=self.RAW, headers=headers)
        return h.engine.receive_action_callback(address.run_id, address.action, address.query, request)

    def test_bad_signature_is_unauthorized_and_changes_nothing(self, h: Harness) -> None:
        """A callback to a signed webhook action with a bad signature answers 401 and leaves the run as it was."""
        run = self.start_waiting(h)
        loaded = h.store.load_run(run.id)
        assert loaded is not None

        for headers in (github_headers(self.RAW, "c-1", secret="wrong"), {"Content-Type": "application/json"}):
            with pytest.raises(Unauthorized) as caught:
                self.callback(h, headers)
            assert caught.value.status == 401

        after = h.store.load_run(run.id)
        assert after is not None
        assert after.etag == loaded.etag
        assert after.run.actions["W"].status == ActionStatus.WAITING

    def test_good_signature_resumes_the_action(self, h: Harness) -> None:
        """A callback with a valid signature resumes the webhook action."""
        run = self.start_waiting(h)

        resumed = self.callback(h, github_headers(self.RAW, "c-1"))

        assert resumed.status == RunStatus.SUCCEEDED
        assert h.run(run.id).actions["W"].outputs["body"] == {"approved": True}


# =========================================================================== 6. concurrency limit


class TestConcurrencyLimit:
    def saved(self, h: Harness, runs: int = 1, signature: dict[str, Any] | None = None) -> str:
        h.put(workflow_body(webhook_trigger(runs=runs, signature=signature), waiting_action()))
        return h.trigger_url()

    def finish(self, h: Harness, run_id: str) -> None:
        """Call back the run's waiting action, which ends the run."""
        for call in h.sender.to(ACTION_SUBSCRIBE_URI):
            assert isinstance(call.body, dict)
            address = parse_callback_url(call.body["callbackUrl"])
            if address.run_id == run_id:
                request = callback_request(address, {"ok": True})
                h.engine.receive_action_callback(address.run_id, address.action, address.query, request)
                return
        raise AssertionError(f"run {run_id} subscribed nothing")

    def test_extra_callbacks_answer_429_with_retry_after(self, h: Harness) -> None:
        """With the cap reached, a trigger callback answers 429 with ``Retry-After`` and starts nothing."""
        url = self.saved(h, runs=2)
        h.post(url)
        h.post(url)

        with pytest.raises(TooManyRequests) as caught:
            h.post(url)

        assert caught.value.status == 429
        assert caught.value.headers["Retry-After"].isdigit()
        assert int(caught.value.headers["Retry-After"]) > 0
        assert len(h.runs()) == 2
        assert [r.status for r in h.runs()] == [RunStatus.WAITING, RunStatus.WAITING]

    def test_slot_is_freed_when_its_run_ends(self, h: Harness) -> None:
        """When a run in progress ends, its slot is given back and the next callback starts a run."""
        url = self.saved(h)
        first = h.post(url)
        with pytest.raises(TooManyRequests):
            h.post(url)

        self.finish(h, first.id)

        assert h.run(first.id).status == RunStatus.SUCCEEDED
        assert h.store.active_runs("wf")[0] == {}
        second = h.post(url)
        assert list(h.store.active_runs("wf")[0]) == [second.id]

    def test_cancelled_run_frees_its_slot(self, h: Harness) -> None:
        """A cancelled run gives its slot back too."""
        url = self.saved(h)
        first = h.post(url)

        h.engine.cancel_run(first.id)

        h.post(url)
        assert len(h.runs()) == 2

    def test_leaked_slot_of_an_ended_run_is_freed_when_the_cap_is_reached(self, h: Harness) -> None:
        """A slot still held by a run that has ended (or never existed) is freed when the cap is reached."""
        url = self.saved(h)
        first = h.post(url)
        self.finish(h, first.id)
        held, etag = h.store.active_runs("wf")
        taken = "2000-01-01T00:00:00Z"  # long ago: whatever holds it is not a start in progress
        h.store.set_active_runs("wf", {**held, first.id: taken}, etag)  # the release was lost

        second = h.post(url)

        assert list(h.store.active_runs("wf")[0]) == [second.id]
        self.finish(h, second.id)
        held, etag = h.store.active_runs("wf")
        h.store.set_active_runs("wf", {**held, "00000000000000000deadbeef0000": taken}, etag)  # never stored
        third = h.post(url)
        assert list(h.store.active_runs("wf")[0]) == [third.id]

    def test_slot_of_a_start_in_progress_is_kept(self, h: Harness) -> None:
        """A slot taken moments ago for a run not stored yet still counts: its start may be on its way."""
        url = self.saved(h)
        held, etag = h.store.active_runs("wf")
        now = h.clock().isoformat()
        h.store.set_active_runs("wf", {**held, "00000000000000000deadbeef0000": now}, etag)

        with pytest.raises(TooManyRequests):
            h.post(url)

    def test_limit_counts_only_runs_of_its_workflow(self, h: Harness) -> None:
        """Another workflow's runs take none of this workflow's slots."""
        url = self.saved(h)
        h.put(workflow_body(webhook_trigger(runs=1), waiting_action()), name="other")
        other_url = h.trigger_url("other")

        h.post(url)
        h.post(other_url)

        assert len(h.runs()) == 1
        assert len(h.runs("other")) == 1

    def test_redelivery_while_full_answers_with_the_first_run(self, h: Harness) -> None:
        """A redelivery of the run holding the only slot answers with that run, not 429."""
        url = self.saved(h, signature=GITHUB_SIGNATURE)
        raw = b'{"n":1}'
        first = h.post(url, raw=raw, headers=github_headers(raw, "d-1"))

        again = h.post(url, raw=raw, headers=github_headers(raw, "d-1"))

        assert again.id == first.id
        assert len(h.runs()) == 1

    def test_delivery_refused_with_429_starts_once_when_redelivered(self, h: Harness) -> None:
        """A delivery refused with 429 and delivered again once a slot is free starts exactly one run."""
        url = self.saved(h, signature=GITHUB_SIGNATURE)
        raw = b'{"n":1}'
        first = h.post(url, raw=raw, headers=github_headers(raw, "d-1"))
        with pytest.raises(TooManyRequests):
            h.post(url, raw=raw, headers=github_headers(raw, "d-2"))

        self.finish(h, first.id)
        second = h.post(url, raw=raw, headers=github_headers(raw, "d-2"))
        again = h.post(url, raw=raw, headers=github_headers(raw, "d-2"))

        assert again.id == second.id
        assert len(h.runs()) == 2


# =========================================================================== the alarm rule


class TestTriggerAlarms:
    def test_polling_trigger_always_has_its_alarm(self, h: Harness, feed: Feed) -> None:
        """Through saves, polls, a drain, a replace and a re-enable, a polling trigger keeps its alarm."""
        feed.items = [{"n": n} for n in range(3)]
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        check_trigger_alarm(h)
        for seconds in (0, 5, 16, 40, 100):
            h.sweep_at(seconds)
            check_trigger_alarm(h)
        h.put(workflow_body(polling_trigger(interval=2), trigger_name="poll"))
        check_trigger_alarm(h)
        h.workflows.set_state("wf", enabled=False)
        h.workflows.set_state("wf", enabled=True)
        check_trigger_alarm(h)
        h.sweep_at(200)
        check_trigger_alarm(h)
        alarm_at = h.state().alarm_at
        assert alarm_at is not None
        assert [i.keys for i in h.alarms()].count(due_keys("w-wf", alarm_at)) == 1

    def test_failed_trigger_always_has_its_alarm(self, h: Harness) -> None:
        """A ``Failed`` trigger keeps an alarm through retries, and loses it once subscribed."""
        h.sender.route(SUBSCRIBE_URI, respond(500))
        h.put(workflow_body(webhook_trigger()))
        check_trigger_alarm(h)
        for seconds in (5, 12, 30):
            h.sweep_at(seconds)
            check_trigger_alarm(h)
            assert h.trigger()["status"] == "Failed"

        h.sender.route(SUBSCRIBE_URI, respond(200))
        h.sweep_at(3600)

        assert h.trigger()["status"] == "Subscribed"
        assert h.alarms() == []
        check_trigger_alarm(h)

    def test_orphan_alarms_are_dropped_without_calls(self, h: Harness, feed: Feed) -> None:
        """Alarms left by a replace or a disable are dropped by the sweep without polling twice."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        h.put(workflow_body(polling_trigger(frequency="Hour"), trigger_name="poll"))

        h.sweep_at(0)

        assert len(feed.polled) == 1
        assert len(h.alarms()) == 1
        check_trigger_alarm(h)


# =========================================================================== over HTTP


TriggerFunction = Callable[[func.HttpRequest], func.HttpResponse]


def user_function(builder: Any) -> TriggerFunction:
    function: TriggerFunction = builder._function.get_user_function()
    return function


@pytest.fixture
def over_http(h: Harness, monkeypatch: pytest.MonkeyPatch) -> TriggerFunction:
    """The trigger URL's Functions handler, wired to this harness's registry."""
    monkeypatch.setattr(bootstrap, "workflows", lambda: h.workflows)
    return user_function(workflow_functions.trigger_callback)


def http_post(handler: TriggerFunction, url: str, body: bytes = b'{"event":1}') -> func.HttpResponse:
    address = parse_trigger_url(url)
    request = func.HttpRequest(
        method="POST",
        url=url,
        headers={"Content-Type": "application/json"},
        params=address.query,
        route_params={"name": address.workflow, "trigger": address.trigger},
        body=body,
    )
    return handler(request)


class TestTriggerUrlOverHttp:
    def test_route_needs_no_function_key(self) -> None:
        """The trigger URL's route is anonymous: its signature is the only credential."""
        bindings = [b.get_dict_repr() for b in workflow_functions.trigger_callback._function.get_bindings()]
        (trigger,) = [b for b in bindings if b["type"] == "httpTrigger"]
        assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])).lower() == "anonymous"

    def test_post_answers_202_with_the_location_of_the_new_run(self, h: Harness, over_http: TriggerFunction) -> None:
        """A POST to a webhook trigger's URL answers ``202`` with the ``Location`` of the run it started."""
        h.put(workflow_body(webhook_trigger()))

        response = http_post(over_http, h.trigger_url())

        assert response.status_code == 202
        (run,) = h.runs()
        assert response.headers["Location"] == f"/api/runs/{run.id}"

    def test_disabled_deleted_and_full_answers(self, h: Harness, over_http: TriggerFunction) -> None:
        """410 for a disabled workflow, 429 with ``Retry-After`` when full, 404 once deleted."""
        h.put(workflow_body(webhook_trigger(runs=1), waiting_action()))
        url = h.trigger_url()
        assert http_post(over_http, url).status_code == 202

        full = http_post(over_http, url)
        assert full.status_code == 429
        assert full.headers["Retry-After"].isdigit()

        h.workflows.set_state("wf", enabled=False)
        assert http_post(over_http, url).status_code == 410
        h.workflows.delete("wf")
        assert http_post(over_http, url).status_code == 404
        assert len(h.runs()) == 1

    def test_redelivery_answers_with_the_first_location(self, h: Harness, over_http: TriggerFunction) -> None:
        """A signed redelivery answers with the first run's ``Location``; a bad signature answers 401."""
        h.put(workflow_body(webhook_trigger(signature=GITHUB_SIGNATURE)))
        url = h.trigger_url()
        raw = b'{"n":1}'
        address = parse_trigger_url(url)

        def post(headers: dict[str, str]) -> func.HttpResponse:
            request = func.HttpRequest(
                method="POST",
                url=url,
                headers=headers,
                params=address.query,
                route_params={"name": address.workflow, "trigger": address.trigger},
                body=raw,
            )
            return over_http(request)

        first = post(github_headers(raw, "d-1"))
        again = post(github_headers(raw, "d-1"))
        bad = post(github_headers(raw, "d-2", secret="wrong"))

        assert (first.status_code, again.status_code, bad.status_code) == (202, 202, 401)
        assert again.headers["Location"] == first.headers["Location"]
        assert len(h.runs()) == 1


class TestReviewRegressions:
    """Races an independent review found in the trigger code; each test replays one."""

    def test_a_sweep_between_a_trigger_alarm_and_its_write_leaves_the_trigger_polling(
        self, h: Harness, feed: Feed
    ) -> None:
        """A sweep that lands after a PUT armed the trigger's alarm but before the workflow is written
        keeps that alarm, so the replaced trigger goes on polling."""
        h.put(workflow_body(polling_trigger(), trigger_name="poll"))
        h.sweep_at(0)
        swept: list[SweepReport] = []
        original = h.store.replace_workflow

        def sweep_first(stored: StoredWorkflow, doc: dict[str, Any]) -> StoredWorkflow:
            if not swept:
                swept.append(h.engine.sweep())
            return original(stored, doc)

        h.store.replace_workflow = sweep_first  # type: ignore[method-assign]
        h.at(10)
        h.put(workflow_body(polling_trigger(interval=2), trigger_name="poll"))
        h.store.replace_workflow = original  # type: ignore[method-assign]

        assert swept
        assert swept[0].done == 0
        check_trigger_alarm(h)
        polled = len(feed.polled)
        h.sweep_at(10 + LEASE.total_seconds() + 1)
        assert len(feed.polled) > polled


class TestRecentWorkflowCopies:
    """``POST /workflows/{name}/runs`` reuses a workflow this process has lately read or
    written (``HOOKFLOW_WORKFLOW_CACHE``); changes made through this process apply at once."""

    def test_starts_read_the_workflow_once(self, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        h.engine.workflow_cache = timedelta(minutes=1)
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        reads = count_workflow_reads(h, monkeypatch)

        for n in range(3):
            h.engine.start_run("wf", inbound({"n": n}))

        assert reads == []
        assert sorted(b["n"] for b in bodies(h.runs())) == [0, 1, 2]

    def test_without_the_setting_every_start_reads_it(self, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        h.engine.workflow_cache = timedelta(0)
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        reads = count_workflow_reads(h, monkeypatch)

        for n in range(2):
            h.engine.start_run("wf", inbound({"n": n}))

        assert reads == ["wf", "wf"]

    def test_disable_enable_and_delete_apply_to_the_next_start(self, h: Harness) -> None:
        h.engine.workflow_cache = timedelta(minutes=1)
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        h.engine.start_run("wf", inbound({"n": 1}))

        h.workflows.set_state("wf", enabled=False)
        with pytest.raises(Conflict) as refused:
            h.engine.start_run("wf", inbound({"n": 2}))
        assert refused.value.code == "WorkflowDisabled"

        h.workflows.set_state("wf", enabled=True)
        h.engine.start_run("wf", inbound({"n": 3}))

        h.workflows.delete("wf")
        with pytest.raises(NotFound):
            h.engine.start_run("wf", inbound({"n": 4}))
        assert sorted(r.trigger.outputs["body"]["n"] for r in h.runs()) == [1, 3]

    def test_a_new_definition_is_used_by_the_next_start(self, h: Harness) -> None:
        h.engine.workflow_cache = timedelta(minutes=1)
        h.put(workflow_body(manual_trigger(), trigger_name="manual"))
        h.engine.start_run("wf", inbound({"n": 1}))

        h.put(workflow_body(manual_trigger(), trigger_name="renamed"))
        run = h.engine.start_run("wf", inbound({"n": 2}))

        assert run.trigger.name == "renamed"


def count_workflow_reads(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the workflows ``h.store`` reads from storage from now on."""
    reads: list[str] = []
    read_rows = h.store._read_rows

    def counting(table: str, partition_key: str, head_key: str) -> Any:
        if head_key == "wf":
            reads.append(partition_key)
        return read_rows(table, partition_key, head_key)

    monkeypatch.setattr(h.store, "_read_rows", counting)
    return reads
