"""Workflows and their triggers: the lifecycle Logic Apps users know.

* ``Request``: a signed invoke URL (shown on the workflow) starts a run per POST, no key needed.
* ``HttpWebhook``: subscribes when an enabled workflow is saved or enabled, with
  ``@listCallbackUrl()`` evaluated to the trigger's callback URL; unsubscribes (same URL)
  when the workflow is disabled, deleted or replaced, then a replaced definition subscribes
  anew. Every POST to the callback URL starts a run. A failed subscribe leaves the workflow
  saved with the trigger ``Failed`` and the error visible; the timer retries with back-off.
* ``Http`` + ``recurrence``: the timer polls. ``200`` starts a run with the response as the
  trigger outputs, ``202`` starts none; ``Location`` becomes the next URL to poll (a target's
  cursor), ``Retry-After`` the next poll (``0``: again at once, within a bound).

Trigger state lives in the workflow's document and changes by ETag-conditional writes. A
trigger that needs the clock has an alarm in the due-item index under ``w-<name>``, written
before the state that needs it, as runs do.

Exactly-once starts from polls: each poll has a sequence number, stored before the poll, and
the run it starts is started with the idempotency key ``poll-<nonce>-<n>``. A crash after the
run started but before the new cursor was stored polls the old cursor again, gets the same
item, and finds the run already there: nothing lost, nothing doubled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urljoin

from pydantic import BaseModel

from shared.actions import http as http_action
from shared.durations import iso
from shared.engine import Engine, InboundRequest
from shared.errors import AlreadyExists, BadRequest, ConcurrencyConflict, ExpressionError, Gone, NotFound
from shared.models import (
    NAME_PATTERN,
    ErrorInfo,
    HttpTrigger,
    HttpWebhookTrigger,
    RequestTrigger,
    RunRecord,
    WorkflowDefinition,
    WorkflowState,
    parse_workflow_put,
)
from shared.outbound import OutboundRequest
from shared.receivers import build_receiver
from shared.retry import Policy, retry_after
from shared.signing import new_nonce
from shared.store import StoredWorkflow
from shared.store.base import DueItem, due_keys

log = logging.getLogger("hookflow.triggers")

ALARM_PREFIX = "w-"
# Polls answered with Retry-After: 0 ("more is waiting") are made again at once, up to this
# many in one wake; the rest wait for the next tick.
MAX_POLLS_PER_WAKE = 20
# How long a client is asked to wait when a concurrency limit is full.
BUSY_RETRY_AFTER = 5

TriggerStatus = Literal["Ready", "Subscribing", "Subscribed", "Failed", "Polling", "Disabled"]


class TriggerState(BaseModel):
    """What the workflow document keeps about its trigger."""

    name: str
    type: str
    status: TriggerStatus
    nonce: str
    # Trigger URLs are built from this (HOOKFLOW_PUBLIC_BASE_URL, else the base URL of the
    # request that saved the workflow), so a URL stays the same while its subscription lasts.
    base_url: str
    subscribed_time: datetime | None = None
    last_error: ErrorInfo | None = None
    failures: int = 0
    next_time: datetime | None = None
    poll_url: str | None = None
    poll_seq: int = 0
    last_poll_time: datetime | None = None
    alarm_at: datetime | None = None


class Workflows:
    """Saves, enables, disables and deletes workflows, and drives their triggers."""

    def __init__(self, engine: Engine, env: Mapping[str, str] | None = None) -> None:
        self.engine = engine
        self.store = engine.store
        self.env = env if env is not None else os.environ
        engine.workflow_waker = self.wake

    # ------------------------------------------------------------------ lifecycle

    def put(self, name: str, body: Any, base_url: str = "") -> tuple[StoredWorkflow, bool]:
        """Create or replace; the old webhook trigger is unsubscribed first, the new one subscribed.

        ``base_url``: the base of the request that saves it, for trigger URLs when no
        ``HOOKFLOW_PUBLIC_BASE_URL`` is set.
        """
        validate_name(name)
        put = parse_workflow_put(body)
        definition = put.definition
        for _ in range(5):
            now = self.engine.clock()
            current = self.store.get_workflow(name)
            old_trigger = _state(current)
            trigger = self._fresh_state(definition, put.state.value, old_trigger, base_url)
            doc = {
                "definition": definition.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                "state": put.state.value,
                "createdTime": current.doc["createdTime"] if current else now.isoformat(),
                "changedTime": now.isoformat(),
                "version": current.version + 1 if current else 1,
                "trigger": trigger.model_dump(mode="json"),
            }
            try:
                stored = self._write(current, name, doc, trigger)
            except (AlreadyExists, ConcurrencyConflict):
                continue
            # The replaced trigger is let go only once the replacement is stored: a write that
            # fails leaves the old subscription in place and in the record.
            if current is not None:
                self._retire(current, trigger)
            return self._start_trigger(stored), current is None
        raise ConcurrencyConflict(f"workflow {name!r} kept changing while it was being saved")

    def get(self, name: str) -> StoredWorkflow:
        validate_name(name)
        stored = self.store.get_workflow(name)
        if stored is None:
            raise NotFound(f"workflow {name!r} does not exist", code="WorkflowNotFound")
        return stored

    def delete(self, name: str) -> None:
        """Delete (conditional on the version read), then unsubscribe a webhook trigger.

        Runs already started go on.
        """
        for _ in range(5):
            stored = self.get(name)
            try:
                deleted = self.store.delete_workflow(name, etag=stored.etag)
            except ConcurrencyConflict:
                continue  # changed meanwhile (a PUT, an enable): decide on the new version
            if not deleted:
                raise NotFound(f"workflow {name!r} does not exist", code="WorkflowNotFound")
            self._retire(stored, None)
            return
        raise ConcurrencyConflict(f"workflow {name!r} kept changing while it was being deleted")

    def set_state(self, name: str, enabled: bool, base_url: str = "") -> StoredWorkflow:
        """Enable (subscribe / start polling) or disable (unsubscribe / stop polling)."""
        wanted = WorkflowState.ENABLED.value if enabled else WorkflowState.DISABLED.value
        for _ in range(5):
            stored = self.get(name)
            if stored.state == wanted:
                return stored
            definition = stored.parsed()
            trigger = self._fresh_state(definition, wanted, _state(stored), base_url, keep_cursor=True)
            doc = {**stored.doc, "state": wanted, "changedTime": self.engine.clock().isoformat()}
            doc["trigger"] = trigger.model_dump(mode="json")
            try:
                updated = self._write(stored, name, doc, trigger)
            except ConcurrencyConflict:
                continue
            if not enabled:
                self._retire(stored, trigger)
            return self._start_trigger(updated)
        raise ConcurrencyConflict(f"workflow {name!r} kept changing")

    def render(self, stored: StoredWorkflow) -> dict[str, Any]:
        """The workflow JSON: definition, state, and the trigger's state and URL."""
        state = _state(stored)
        trigger: dict[str, Any] | None = None
        if state is not None:
            trigger = {
                "name": state.name,
                "type": state.type,
                "status": state.status,
                "subscribedTime": iso(state.subscribed_time) if state.subscribed_time else None,
                "lastError": state.last_error.model_dump() if state.last_error else None,
                "nextTime": iso(state.next_time) if state.next_time else None,
                "lastPollTime": iso(state.last_poll_time) if state.last_poll_time else None,
            }
            if state.type in ("Request", "HttpWebhook"):
                trigger["callbackUrl"] = self.trigger_url(stored.name, state)
        return {
            "name": stored.name,
            "state": stored.state,
            "version": stored.version,
            "createdTime": iso(stored.created_time),
            "changedTime": iso(stored.changed_time),
            "definition": stored.definition,
            "trigger": trigger,
        }

    def trigger_url(self, name: str, state: TriggerState) -> str:
        return self.engine.signer.trigger_url(state.base_url, name, state.name, state.nonce)

    # ------------------------------------------------------------------ trigger callbacks

    def receive_trigger_callback(
        self, name: str, trigger: str, query: Mapping[str, str], request: InboundRequest
    ) -> tuple[RunRecord, bool]:
        """Start a run from a POST to a trigger's URL; return it and whether it is new.

        401 bad URL signature or inbound signature; 404 workflow gone; 410 disabled, or a URL
        from an earlier subscription; 413 too large; 429 concurrency limit reached. A
        redelivery with a delivery id already seen returns the first run.
        """
        target = self.engine.signer.verify_trigger(name, trigger, query)
        stored = self.store.get_workflow(name)
        if stored is None:
            raise NotFound(f"workflow {name!r} does not exist", code="WorkflowNotFound")
        state = _state(stored)
        if stored.state != WorkflowState.ENABLED.value:
            raise Gone(f"workflow {name!r} is disabled", code="WorkflowDisabled")
        if state is None or state.name != trigger or state.nonce != target.nonce:
            raise Gone("this trigger URL belongs to an earlier subscription", code="TriggerGone")
        self.engine.check_body_size(request.body)
        definition = stored.parsed()
        spec = definition.triggers[trigger]
        key = None
        if spec.signature is not None:
            verified = build_receiver(spec.signature, self.env).verify(
                request.headers, request.body, self.engine.clock()
            )
            key = f"delivery-{verified.delivery_id}" if verified.delivery_id else None
        run = self.engine.start_run(name, request, idempotency_key=key, stored=stored)
        return run, False

    # ------------------------------------------------------------------ the timer

    def wake(self, name: str, item: DueItem) -> bool:
        """The sweep's entry for a trigger alarm: retry a subscribe, or poll."""
        for _ in range(5):
            stored = self.store.get_workflow(name)
            state = _state(stored)
            if (
                stored is None
                or state is None
                or state.alarm_at is None
                or (due_keys(item.run_id, state.alarm_at) != item.keys)
            ):
                if self.engine.clock() - item.due_at < self.engine.lease:
                    # Alarms are written before the state that points at them: this one may
                    # belong to a write still on its way. Look again later.
                    return False
                self.engine._drop_alarm(item.run_id, item.due_at)
                return True
            # The claimed item stays the trigger's alarm while we work; the write that sets
            # the next time moves it (and a crash brings it back when the claim runs out).
            try:
                if stored.state != WorkflowState.ENABLED.value or state.status not in (
                    "Failed",
                    "Polling",
                    "Subscribing",
                ):
                    self._save_state(stored, state.model_copy(update={"next_time": None}))
                elif state.type == "HttpWebhook":
                    self._start_trigger(stored)
                else:
                    self._poll(stored, state)
            except ConcurrencyConflict:
                continue
            return True
        return False

    def _poll(self, stored: StoredWorkflow, state: TriggerState) -> None:
        """Poll until nothing is waiting (or the bound), then store the cursor once.

        ``poll_seq`` counts the items taken from the stored cursor on. The run for an item is
        started with ``poll-<nonce>-<seq>``, and ``seq`` only moves in the write that moves the
        cursor, so a crash in between replays the same polls with the same keys: each item's
        run is found, not started again.
        """
        definition = stored.parsed()
        spec = definition.triggers[state.name]
        assert isinstance(spec, HttpTrigger)
        trigger_request = InboundRequest(
            "POST", f"{state.base_url}/api/workflows/{stored.name}/triggers/{state.name}", {}, b""
        )
        started = time.monotonic()
        for _ in range(MAX_POLLS_PER_WAKE):
            now = self.engine.clock()
            if state.next_time is not None and state.next_time > now:
                break
            if time.monotonic() - started > self.engine.inline_budget.total_seconds():
                break  # the rest waits for the next tick, well inside this wake's claim
            request = self._build(spec, stored.name, state, now)
            if isinstance(request, ErrorInfo):
                state.last_error, state.next_time = request, now + spec.recurrence.period
                break
            response, error = http_action.call(self.engine.sender, request)
            now = self.engine.clock()
            state.last_poll_time = now
            if response is None:
                state.last_error = error
                state.next_time = now + spec.recurrence.period
                break
            if response.status_code == 200:
                outputs = {
                    "headers": http_action.redact_headers(response.headers),
                    "body": response.body,
                    "statusCode": 200,
                }
                self.engine.start_run(
                    stored.name,
                    trigger_request,
                    idempotency_key=f"poll-{state.nonce}-{state.poll_seq}",
                    stored=stored,
                    outputs=outputs,
                )
                state.poll_seq += 1
                state.last_error = None
            elif response.status_code != 202:
                state.last_error = http_action.outcome_error(response)
            else:
                state.last_error = None
            location = next((v for k, v in response.headers.items() if k.lower() == "location"), None)
            if location and response.status_code in (200, 202):
                state.poll_url = urljoin(request.url, location)
            asked = retry_after(response.headers, now)
            state.next_time = now + (asked if asked is not None else spec.recurrence.period)
        self._save_state(stored, state)

    # ------------------------------------------------------------------ internals

    def _fresh_state(
        self,
        definition: WorkflowDefinition,
        workflow_state: str,
        old: TriggerState | None,
        base_url: str,
        *,
        keep_cursor: bool = False,
    ) -> TriggerState:
        name = definition.trigger_name
        base = self.engine.public_base_url or base_url or (old.base_url if old else "") or "http://localhost:7071"
        spec = definition.triggers[name]
        enabled = workflow_state == WorkflowState.ENABLED.value
        now = self.engine.clock()
        if isinstance(spec, RequestTrigger):
            # The manual URL stays the same across saves, like a Logic Apps trigger URL.
            keep = old is not None and old.type == "Request" and old.name == name
            return TriggerState(
                name=name,
                type="Request",
                status="Ready" if enabled else "Disabled",
                nonce=old.nonce if keep and old is not None else new_nonce(),
                base_url=old.base_url if keep and old is not None else base,
            )
        if isinstance(spec, HttpWebhookTrigger):
            return TriggerState(
                name=name,
                type="HttpWebhook",
                status="Subscribing" if enabled else "Disabled",
                nonce=new_nonce(),
                base_url=base,
                # Should the process die inside subscribe, the sweep subscribes again then.
                next_time=now + self.engine.lease if enabled else None,
            )
        keep = keep_cursor and old is not None and old.type == "Http" and old.name == name
        return TriggerState(
            name=name,
            type="Http",
            status="Polling" if enabled else "Disabled",
            # Re-enabled, a polling trigger carries on from its cursor, as in Logic Apps; a
            # replaced definition starts afresh.
            nonce=old.nonce if keep and old is not None else new_nonce(),
            poll_url=old.poll_url if keep and old is not None else None,
            poll_seq=old.poll_seq if keep and old is not None else 0,
            next_time=now if enabled else None,
            base_url=base,
        )

    def _write(
        self, current: StoredWorkflow | None, name: str, doc: dict[str, Any], state: TriggerState, *, rearm: bool = True
    ) -> StoredWorkflow:
        """Create or replace, arming the trigger's alarm first when it needs the clock."""
        if rearm:
            self._arm(name, state)
        doc["trigger"] = state.model_dump(mode="json")
        if current is None:
            return self.store.create_workflow(name, doc)
        return self.store.replace_workflow(current, doc)

    def _save_state(self, stored: StoredWorkflow, state: TriggerState, *, rearm: bool = True) -> StoredWorkflow:
        previous = _state(stored)
        old_alarm = previous.alarm_at if previous else None
        doc = {**stored.doc}
        updated = self._write(stored, stored.name, doc, state, rearm=rearm)
        if old_alarm is not None and old_alarm != state.alarm_at:
            self.engine._drop_alarm(ALARM_PREFIX + stored.name, old_alarm)
        return updated

    def _arm(self, name: str, state: TriggerState) -> None:
        needed = state.next_time if state.status in ("Polling", "Failed", "Subscribing") else None
        if needed is not None:
            needed = max(needed, self.engine.clock())  # due in the past is due now
        if needed is not None and needed != state.alarm_at:
            self.store.add_due(ALARM_PREFIX + name, needed)
            state.alarm_at = needed
        elif needed is None:
            state.alarm_at = None

    def _start_trigger(self, stored: StoredWorkflow) -> StoredWorkflow:
        """Subscribe a webhook trigger that should be subscribed (after its state is stored)."""
        state = _state(stored)
        if state is None or stored.state != WorkflowState.ENABLED.value or state.type != "HttpWebhook":
            return stored
        if state.status not in ("Subscribing", "Failed"):
            return stored
        spec = stored.parsed().triggers[state.name]
        assert isinstance(spec, HttpWebhookTrigger)
        now = self.engine.clock()
        request = self._build(spec, stored.name, state, now)
        error: ErrorInfo | None
        if isinstance(request, ErrorInfo):
            error = request
        else:
            response, error = http_action.call(self.engine.sender, request)
            if response is not None:
                error = http_action.outcome_error(response)
        now = self.engine.clock()
        if error is None:
            state.status, state.subscribed_time, state.last_error, state.failures = "Subscribed", now, None, 0
            state.next_time = None
        else:
            state.status, state.last_error = "Failed", error
            state.failures += 1
            # The trigger must subscribe in the end: past its own policy, keep the default back-off.
            retry = min(state.failures, 4)
            delay = Policy.of(spec.inputs.subscribe.retry_policy).delay(retry, self.engine.rand)
            delay = delay or Policy.of(None).delay(retry, self.engine.rand) or timedelta(minutes=5)
            state.next_time = now + delay
        try:
            return self._save_state(stored, state)
        except ConcurrencyConflict:
            # Someone replaced or disabled the workflow meanwhile: our subscription is theirs
            # to know nothing about, so take it back.
            if error is None:
                self._unsubscribe(stored, state)
            raise

    def _retire(self, old: StoredWorkflow, replacement: TriggerState | None) -> None:
        """Let go of a trigger whose replacement (or deletion) is stored: unsubscribe a webhook
        trigger that is, or may be, subscribed, and drop an alarm the replacement does not use."""
        state = _state(old)
        if state is None:
            return
        # "Subscribing": a subscribe whose outcome is unknown; unsubscribing one that never
        # took is harmless to a target, leaving one behind is not.
        if state.type == "HttpWebhook" and state.status in ("Subscribed", "Subscribing"):
            self._unsubscribe(old, state)
        if state.alarm_at is not None and (replacement is None or replacement.alarm_at != state.alarm_at):
            self.engine._drop_alarm(ALARM_PREFIX + old.name, state.alarm_at)

    def _unsubscribe(self, stored: StoredWorkflow, state: TriggerState) -> None:
        spec = stored.parsed().triggers[state.name]
        if not isinstance(spec, HttpWebhookTrigger) or spec.inputs.unsubscribe is None:
            return
        request = self._build(spec, stored.name, state, self.engine.clock(), unsubscribe=True)
        if isinstance(request, ErrorInfo):
            log.warning("workflow %s: unsubscribe not sent: %s", stored.name, request.message)
            return
        response, error = http_action.call(self.engine.sender, request)
        if response is not None:
            error = http_action.outcome_error(response)
        if error is not None:
            log.warning("workflow %s: unsubscribe failed: %s", stored.name, error.message)

    def _build(
        self,
        spec: HttpWebhookTrigger | HttpTrigger,
        name: str,
        state: TriggerState,
        now: datetime,
        *,
        unsubscribe: bool = False,
    ) -> OutboundRequest | ErrorInfo:
        """The outbound request for a subscribe, an unsubscribe or a poll; or the error instead."""
        url = self.trigger_url(name, state)
        headers = {"x-ms-workflow-name": name, "x-ms-workflow-operation-name": state.name}
        try:
            if isinstance(spec, HttpWebhookTrigger):
                request_spec = spec.inputs.unsubscribe if unsubscribe else spec.inputs.subscribe
                assert request_spec is not None
                evaluated = http_action.evaluate_spec(request_spec, _TriggerContext(now, url))
            else:
                evaluated = http_action.evaluate_spec(spec.inputs, _TriggerContext(now, None))
                if state.poll_url:
                    evaluated = {**evaluated, "uri": state.poll_url, "queries": None}
            return http_action.build_request(evaluated, headers, self.engine.tokens)
        except ExpressionError as exc:
            return ErrorInfo(code="InvalidTemplate", message=exc.message)
        except Exception as exc:  # an identity that gives no token, ...: recorded, not raised
            return ErrorInfo(code="RequestNotBuilt", message=f"the request could not be built: {type(exc).__name__}")


class _TriggerContext:
    """Expressions in trigger inputs: the callback URL and the clock, no run data."""

    def __init__(self, now: datetime, callback_url: str | None) -> None:
        self._now = now
        self._callback_url = callback_url

    def trigger_outputs(self) -> Any:
        raise ExpressionError("a trigger's inputs cannot use trigger outputs: no run exists yet")

    def action_outputs(self, name: str) -> Any:
        raise ExpressionError("a trigger's inputs cannot use action outputs")

    def callback_url(self) -> str:
        if self._callback_url is None:
            raise ExpressionError("listCallbackUrl() is only available inside an HttpWebhook trigger")
        return self._callback_url

    def utc_now(self) -> datetime:
        return self._now


def validate_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise BadRequest(
            "workflow names start with a letter or digit and hold letters, digits, '_', '.', '-' (at most 80)",
            code="InvalidName",
        )


def _state(stored: StoredWorkflow | None) -> TriggerState | None:
    if stored is None or stored.trigger is None:
        return None
    return TriggerState.model_validate(stored.trigger)


__all__ = ["ALARM_PREFIX", "TriggerState", "Workflows"]
