"""Advance a run until it suspends or ends; sweep what the clock has made due.

The rules that keep a run correct without holding anything in memory between requests:

* **One advancer.** A run carries a lease (owner, expiry). Only the holder runs actions.
  Anyone else who has news for the run (a callback that arrives while the start request is
  still subscribing) records just that news, with an ETag-conditional write, and leaves the
  rest to the holder, who finds it on its next write (a conflict: reload, merge, go on).
* **Write before side effects that others can observe.** An ``HttpWebhook`` action is
  written as ``Waiting`` with its wait nonce *before* ``subscribe`` is called (write-ahead),
  so a callback that comes back before ``subscribe`` returns finds its wait. A party that is
  not yet the holder writes its claim before it calls anything.
* **Pure steps are free.** Skipping, timing out, finishing a delay, settling the run's status
  and ending the run happen in memory and ride along with the next write.
* **An alarm before the state that needs it.** Every run that is not over has one entry in
  the due-item index (its *alarm*) at or before the next moment it needs the clock: a
  timeout, a poll, a retry, the end of a delay, or its lease running out while someone works
  on it. The alarm is written before the run state that depends on it, so an alarm can be
  an orphan (the sweep drops it) but is never missing. An alarm is only ever moved earlier
  on the hot path; one that fires early is re-armed by the sweep.
* **Unsubscribe follows the write that ends a subscribed wait** (that write marks it
  ``owed``), so a crash between the two is finished by the sweep. At the end of a run a
  successful unsubscribe deletes the run's alarm instead of writing the run again.

Storage transactions in the life of a one-webhook run resumed within the lease: read the
workflow (none when this process has read it within ``HOOKFLOW_WORKFLOW_CACHE``), insert
the alarm, insert the run (the write-ahead), record the subscribe, read the
run on callback, write the ended run, delete the alarm.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

from shared import expressions
from shared.actions import http as http_action
from shared.durations import iso as to_iso
from shared.errors import (
    AlreadyExists,
    BadRequest,
    ConcurrencyConflict,
    Conflict,
    ExpressionError,
    Gone,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
)
from shared.models import (
    ActionRecord,
    ActionStatus,
    ErrorInfo,
    HttpAction,
    HttpRequestSpec,
    HttpWebhookAction,
    PollRecord,
    RunRecord,
    RunStatus,
    Step,
    TriggerRecord,
    WaitAction,
    WaitRecord,
    WorkflowDefinition,
    WorkflowState,
    topological_order,
)
from shared.outbound import OutboundRequest, OutboundResponse, Sender, decode_body
from shared.receivers import build_receiver
from shared.retry import Policy, retry_after, retryable_status
from shared.signing import CallbackSigner, new_nonce, redact_url
from shared.store import LoadedRun, Store, StoredWorkflow
from shared.store.base import DueItem, due_keys

log = logging.getLogger("hookflow.engine")

Clock = Callable[[], datetime]

_MAX_CONFLICT_RETRIES = 20
# Logic Apps polls a 202's Location every 20 seconds when the answer names no Retry-After.
DEFAULT_POLL_INTERVAL = timedelta(seconds=20)
HEARTBEAT_HEADER = "x-hookflow-heartbeat"
# How soon the sweep looks again at an item whose run was busy.
BUSY_RECHECK = timedelta(seconds=15)
OUTCOME_HEADER = "x-hookflow-outcome"


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime) -> str:
    """Run ids sort newest first (inverted microseconds, like Logic Apps' run ids) and end
    in random hex so that two runs started in the same microsecond differ."""
    micros = int(now.timestamp() * 1_000_000)
    return f"{10**17 - micros:017d}{secrets.token_hex(6)}"


@dataclass(frozen=True)
class InboundRequest:
    """An HTTP request as the engine sees it: no Azure Functions types."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def base_url(self) -> str:
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    def outputs(self) -> dict[str, Any]:
        """``{"headers", "body"}`` as WDL shows a request: body decoded, secrets redacted."""
        content_type = self.header("content-type")
        media = (content_type or "").split(";")[0].strip().lower()
        if self.body and (media == "application/json" or media.endswith("+json")):
            try:
                body: Any = json.loads(self.body)
            except ValueError as exc:
                raise BadRequest("the body is not valid JSON", code="InvalidJson") from exc
        else:
            body = decode_body(self.body, content_type)
        return {"headers": http_action.redact_headers(dict(self.headers)), "body": body}


@dataclass
class SweepReport:
    """What one sweep did: items it found due, finished, left to a later sweep, or failed."""

    found: int = 0
    done: int = 0
    busy: int = 0
    failed: int = 0
    left: int = 0
    seconds: float = 0.0
    query_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Context:
    """What expressions may see while one action is being evaluated."""

    def __init__(self, run: RunRecord, now: datetime, callback_url: str | None) -> None:
        self._run = run
        self._now = now
        self._callback_url = callback_url

    def trigger_outputs(self) -> Any:
        return self._run.trigger.outputs

    def action_outputs(self, name: str) -> Any:
        record = self._run.actions.get(name)
        if record is None or record.outputs is None:
            raise ExpressionError(f"the action {name!r} has no outputs (it has not run or did not produce any)")
        return record.outputs

    def callback_url(self) -> str:
        if self._callback_url is None:
            raise ExpressionError("listCallbackUrl() is only available inside an HttpWebhook action")
        return self._callback_url

    def utc_now(self) -> datetime:
        return self._now


class _LeaseLost(Exception):
    """Our write lost to someone who took the run over (cancel, or an expired lease)."""


class Engine:
    """Starts runs, receives callbacks, sweeps due work. Takes its adapters as arguments."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        signer: CallbackSigner,
        *,
        max_body_bytes: int,
        public_base_url: str = "",
        clock: Clock = utc_now,
        lease: timedelta = timedelta(minutes=5),
        max_wait: timedelta = timedelta(days=90),
        inline_budget: timedelta = timedelta(seconds=30),
        workflow_cache: timedelta = timedelta(0),
        tokens: http_action.TokenProvider | None = None,
        rand: Callable[[float, float], float] = random.uniform,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.signer = signer
        self.max_body_bytes = max_body_bytes
        self.public_base_url = public_base_url.rstrip("/")
        self.clock = clock
        self.lease = lease
        self.max_wait = max_wait
        self.inline_budget = inline_budget
        # How old a copy of a workflow a start may use (HOOKFLOW_WORKFLOW_CACHE).
        self.workflow_cache = workflow_cache
        self.tokens = tokens or http_action.TokenProvider()
        self.rand = rand
        self.env = env if env is not None else os.environ  # app settings that hold webhook secrets
        # Set by shared.triggers.Workflows: wakes a trigger's alarm ("w-<name>").
        self.workflow_waker: Callable[[str, DueItem], bool] | None = None

    # ------------------------------------------------------------------ public operations

    def start_run(
        self,
        workflow: str,
        request: InboundRequest,
        *,
        idempotency_key: str | None = None,
        stored: StoredWorkflow | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Create a run from a trigger request and advance it until it suspends or ends.

        ``stored``: the workflow, when the caller has just read it; ``outputs``: the trigger
        outputs when they are not the request's (a polling trigger's response).
        """
        if stored is None:
            stored = self.store.get_workflow(workflow, max_age=self.workflow_cache.total_seconds())
        if stored is None:
            raise NotFound(f"workflow {workflow!r} does not exist", code="WorkflowNotFound")
        if stored.state != WorkflowState.ENABLED:
            raise Conflict(f"workflow {workflow!r} is disabled", code="WorkflowDisabled")
        self.check_body_size(request.body)
        if outputs is None:
            outputs = request.outputs()
        definition = stored.parsed()
        now = self.clock()
        run_id = new_run_id(now)
        if idempotency_key:
            bound = self.store.claim_idempotency_key(workflow, idempotency_key, run_id)
            if bound != run_id:
                existing = self.store.load_run(bound)
                if existing is not None:
                    return existing.run
                run_id = bound  # the first attempt died before creating it: create it now
        limit = definition.triggers[definition.trigger_name].max_runs
        if limit is not None:
            self._take_slot(workflow, run_id, limit)
        owner = self._owner()
        run = RunRecord(
            id=run_id,
            workflow=workflow,
            start_time=now,
            trigger=TriggerRecord(name=definition.trigger_name, outputs=outputs),
            actions={name: ActionRecord() for name in topological_order(definition)},
            client_tracking_id=request.header("x-ms-client-tracking-id") or run_id,
            base_url=self.public_base_url or request.base_url,
            lease_owner=owner,
            lease_until=now + self.lease,
        )
        try:
            created: LoadedRun | None = None
            if idempotency_key or limit is not None:
                # Stored before any side effect: a retry with the same key must find this run,
                # and a slot must point at a run that exists.
                created = self._persist(None, run, definition)
            loaded = self._advance(created, run, definition, owner=owner, claimed=True)
        except (AlreadyExists, ConcurrencyConflict):
            # The id collided (an idempotent retry won), or the run was taken from us while we
            # worked on it (cancelled): either way what is stored is the answer.
            existing = self.store.load_run(run_id)
            if existing is None:
                raise
            return existing.run
        return loaded.run

    def _take_slot(self, workflow: str, run_id: str, limit: int) -> None:
        """Hold one of the workflow's ``limit`` run slots, or answer 429.

        Slots name their runs and when they were taken, so a slot whose run ended without
        giving it back (a crash between the run's last write and the release), or whose run
        was never stored, is found and freed here; a slot younger than a lease may belong to
        a start still in progress and is left alone.
        """
        for _ in range(_MAX_CONFLICT_RETRIES):
            runs, etag = self.store.active_runs(workflow)
            if run_id in runs:
                return
            now = self.clock()
            if len(runs) >= limit:
                runs = {r: taken for r, taken in runs.items() if self._slot_alive(r, taken, now)}
                if len(runs) >= limit:
                    raise TooManyRequests(
                        f"workflow {workflow!r} already has {limit} runs in progress",
                        code="ConcurrencyLimit",
                        headers={"Retry-After": "5"},
                    )
            try:
                self.store.set_active_runs(workflow, {**runs, run_id: to_iso(now)}, etag)
            except ConcurrencyConflict:
                continue
            return
        raise ConcurrencyConflict(f"the run slots of {workflow!r} kept changing")

    def _slot_alive(self, run_id: str, taken: str, now: datetime) -> bool:
        held = self.store.load_run(run_id)
        if held is not None:
            return not held.run.status.ended
        taken_at = datetime.fromisoformat(taken.replace("Z", "+00:00"))
        return now - taken_at < self.lease  # not stored yet: a start may still be on its way

    def _give_slot(self, run: RunRecord) -> None:
        """Give back a run's slot when it ends (best effort: a slot left over is freed later)."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            try:
                runs, etag = self.store.active_runs(run.workflow)
                if run.id not in runs:
                    return
                self.store.set_active_runs(run.workflow, {r: t for r, t in runs.items() if r != run.id}, etag)
                return
            except ConcurrencyConflict:
                continue
            except Exception:
                log.warning("run %s: could not give back its concurrency slot", run.id)
                return

    def get_run(self, run_id: str) -> LoadedRun:
        loaded = self.store.load_run(run_id)
        if loaded is None:
            raise NotFound(f"run {run_id!r} does not exist", code="RunNotFound")
        return loaded

    def cancel_run(self, run_id: str) -> RunRecord:
        """End a run as ``Cancelled``: waiting actions are cancelled and unsubscribed, their
        callback URLs answer ``410`` from then on. ``409`` when the run has already ended."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            loaded = self.get_run(run_id)
            run = loaded.run.model_copy(deep=True)
            if run.status.ended:
                raise Conflict(f"the run has already ended ({run.status.value})", code="RunEnded")
            now = self.clock()
            run.status = RunStatus.CANCELLED
            run.end_time = now
            run.error = ErrorInfo(code="Cancelled", message="the run was cancelled")
            for record in run.actions.values():
                if not record.status.final:
                    record.status = ActionStatus.CANCELLED
                    record.end_time = now
                    record.step = record.next_at = None
            # Cancel overrides whoever was advancing: their next write conflicts and stops.
            run.lease_owner = run.lease_until = None
            try:
                return self._advance(loaded, run, loaded.definition, owner=self._owner(), claimed=False).run
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(f"run {run_id!r} kept changing; try again")

    def receive_action_callback(
        self, run_id: str, action: str, query: Mapping[str, str], request: InboundRequest
    ) -> RunRecord:
        """Resume a waiting webhook action. Exactly one callback per wait wins.

        ``x-hookflow-outcome: failed`` fails the action with the body as its error;
        ``x-hookflow-heartbeat: true`` resumes nothing and pushes the action's timeout out by
        its ``limit.heartbeat``. Raises Unauthorized (bad signature), PayloadTooLarge,
        BadRequest, Conflict (already resumed) or Gone (the wait is over); none of them
        changes anything.
        """
        target = self.signer.verify_action(run_id, action, query)
        self.check_body_size(request.body)
        received: dict[str, Any] | None = None
        verified_signature = False
        ours = secrets.token_hex(8)  # marks our callback in the wait, to know it if our write landed
        heartbeat = (request.header(HEARTBEAT_HEADER) or "").strip().lower() == "true"
        failed = (request.header(OUTCOME_HEADER) or "").strip().lower() == "failed"
        for _ in range(_MAX_CONFLICT_RETRIES):
            loaded = self.store.load_run(run_id)
            if loaded is None:
                raise Gone("the run no longer exists", code="RunGone")
            run = loaded.run.model_copy(deep=True)
            record = run.actions.get(action)
            wait = record.wait if record else None
            if record is None or wait is None or wait.nonce != target.nonce:
                raise Gone("this callback URL belongs to a wait that is over", code="WaitGone")
            if wait.callback_at is not None:
                if wait.callback_id == ours:
                    return loaded.run  # ours landed; what failed after it was someone else's turn
                raise Conflict("an earlier callback already resumed this wait", code="AlreadyResumed")
            now = self.clock()
            if record.status != ActionStatus.WAITING or run.status.ended:
                raise Gone(f"the wait ended with status {record.status.value}", code="WaitGone")
            if record.deadline is not None and record.deadline <= now:
                # Timed out already; the sweep has not got to it yet, but the answer is the same.
                raise Gone("the wait timed out", code="WaitGone")
            definition_action = loaded.definition.actions[action]
            signature = definition_action.signature if isinstance(definition_action, HttpWebhookAction) else None
            if signature is not None and not verified_signature:
                build_receiver(signature, self.env).verify(request.headers, request.body, now)
                verified_signature = True
            if received is None:
                received = request.outputs()  # after the signature: a forged body gets 401, not 400
            owner = self._owner()
            try:
                if heartbeat:
                    wait.heartbeat_at = now
                    beat = definition_action.heartbeat if isinstance(definition_action, HttpWebhookAction) else None
                    if beat is not None and record.deadline is not None:
                        record.deadline = max(record.deadline, now + beat)
                    return self._persist(loaded, run).run
                wait.callback_at, wait.callback_id = now, ours
                record.outputs = {"statusCode": 200, **received}
                record.end_time = now
                record.step = record.next_at = None
                if failed:
                    record.status = ActionStatus.FAILED
                    record.error = ErrorInfo(code="CallbackFailed", message=_error_text(received["body"]))
                else:
                    record.status = ActionStatus.SUCCEEDED
                    record.error = None
                if run.lease_free(now, owner):
                    return self._advance(loaded, run, loaded.definition, owner=owner, claimed=False).run
                # The holder is still at work (typically: still inside subscribe). Record the
                # news; the holder merges it on its next write.
                return self._persist(loaded, run).run
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(f"run {run_id!r} kept changing; try again")

    def callback_urls(self, run: RunRecord) -> dict[str, str]:
        """Signed callback URLs of the actions that are waiting now (shown, never stored)."""
        return {
            name: self.signer.action_url(run.base_url, run.id, name, record.wait.nonce)
            for name, record in run.actions.items()
            if record.status == ActionStatus.WAITING and record.wait is not None
        }

    def check_body_size(self, body: bytes) -> None:
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(f"the body is {len(body)} bytes; the limit is {self.max_body_bytes}")

    # ------------------------------------------------------------------ the sweep

    def sweep(self, *, batch: int = 200, budget: timedelta = timedelta(seconds=20)) -> SweepReport:
        """Do what is due: one range query for the items due by now, then each item in turn.

        Each item is claimed (ETag-conditional) before its run is touched, so overlapping
        sweeps never work on the same item; a claim runs out after the lease, so the items of
        a sweep that died come back. What does not fit ``batch`` or ``budget`` waits for the
        next tick.
        """
        started = time.monotonic()
        now = self.clock()
        items = self.store.due_items(now, batch)
        report = SweepReport(found=len(items), query_seconds=time.monotonic() - started)
        for item in items:
            if time.monotonic() - started > budget.total_seconds():
                report.left += 1
                continue
            if item.claimed_until is not None and item.claimed_until > now:
                report.busy += 1
                continue
            claimed = self.store.claim_due(item, now + self.lease)
            if claimed is None:
                report.busy += 1
                continue
            try:
                done = self.wake(claimed)
            except Exception as exc:  # one bad run must not stop the sweep; its claim runs out
                log.exception("sweep: run %s failed", item.run_id)
                report.failed += 1
                report.errors.append(f"{item.run_id}: {type(exc).__name__}")
                continue
            if done:
                report.done += 1
            else:
                report.busy += 1
                # Someone is at work on it: look again soon rather than after a whole lease.
                self.store.claim_due(claimed, now + BUSY_RECHECK)
        report.seconds = time.monotonic() - started
        return report

    def wake(self, item: DueItem) -> bool:
        """Do what is due for the run of a claimed alarm, and re-arm or drop that alarm.

        While the run is worked on, the claimed item is its alarm (a claim that runs out
        brings it back). ``False``: the run is busy; leave the item to come back later.
        """
        if item.run_id.startswith("w-"):
            if self.workflow_waker is None:
                return False
            return self.workflow_waker(item.run_id[2:], item)
        for _ in range(_MAX_CONFLICT_RETRIES):
            loaded = self.store.load_run(item.run_id)
            run = loaded.run.model_copy(deep=True) if loaded is not None else None
            now = self.clock()
            if loaded is None or run is None or run.alarm_at is None or due_keys(run.id, run.alarm_at) != item.keys:
                if now - item.due_at < self.lease:
                    # Alarms are written before the state that points at them: this one may
                    # belong to a write still on its way. Look again later.
                    return False
                self._drop_alarm(item.run_id, item.due_at)  # an orphan: no run, or not its alarm any more
                return True
            owner = self._owner()
            if not run.lease_free(now, owner):
                return False  # someone is at work on it; the claim runs out and we look again
            try:
                self._advance(loaded, run, loaded.definition, owner=owner, claimed=False, rearm=True)
            except ConcurrencyConflict:
                continue
            return True
        return False

    # ------------------------------------------------------------------ advancing

    def _advance(
        self,
        loaded: LoadedRun | None,
        run: RunRecord,
        definition: WorkflowDefinition,
        *,
        owner: str,
        claimed: bool,
        rearm: bool = False,
    ) -> LoadedRun:
        """Run what is due until the run rests or ends; persist; return the persisted run.

        ``claimed`` says whether ``owner`` already holds the lease *in storage* (or the run
        is not stored yet, so nobody else can know it). When it does not, the first side
        effect is preceded by a write that takes the lease; a conflict on that write is
        raised so that the caller decides again from fresh state. ``rearm``: the run's alarm
        has fired (the sweep), so at rest it moves to whenever the run next needs the clock,
        later as well as earlier.
        """
        order = topological_order(definition)
        started = time.monotonic()
        while True:
            now = self.clock()
            if claimed:
                run.lease_owner, run.lease_until = owner, now + self.lease
            self._settle(run, definition, order, now)
            over_budget = time.monotonic() - started > self.inline_budget.total_seconds()
            step = None if over_budget else self._next_step(run, definition, order, now)
            if step is None:
                owed = self._owed_unsubscribes(run, now)
                try:
                    if owed:
                        # Keep the lease while we unsubscribe, so nobody else does it too.
                        run.lease_owner, run.lease_until = owner, now + self.lease
                        run.status = self._resting_status(run)
                        loaded = self._persist(loaded, run, definition)
                        claimed = True
                        first_tries = all(run.actions[n].wait.unsubscribe_attempts == 0 for n in owed)  # type: ignore[union-attr]
                        if self._unsubscribe_all(run, definition, owed) and first_tries and self._finished(run):
                            # Nothing left to do or record: drop the alarm, skip the write.
                            if run.alarm_at is not None:
                                self._drop_alarm(run.id, run.alarm_at)
                            return loaded
                        continue  # write what the unsubscribes changed, then rest
                    run.lease_owner = run.lease_until = None
                    run.status = self._resting_status(run)
                    if rearm and loaded is not None and self._finished(run) and _same(loaded.run, run):
                        # A late alarm of a run that is over: drop it, nothing to write.
                        if run.alarm_at is not None:
                            self._drop_alarm(run.id, run.alarm_at)
                        return loaded
                    return self._persist(loaded, run, definition, rearm=rearm)
                except ConcurrencyConflict:
                    if not claimed:
                        raise
                    loaded, run = self._merge_after_conflict(run, owner)
                    continue
            if not claimed:
                run.lease_owner, run.lease_until = owner, now + self.lease
                run.status = RunStatus.RUNNING
                loaded = self._persist(loaded, run, definition)
                claimed = True
                continue
            kind, name = step
            action = definition.actions[name]
            if kind == "start" and self._unstored_wait_outcome(loaded, run):
                # A wait we ended ourselves (subscribe failed, timed out) may have been
                # resumed by a callback meanwhile: store first, so the merge decides which,
                # before anything downstream runs on our version.
                loaded, run = self._checkpoint(loaded, run, definition, owner)
                continue
            if kind == "start" and isinstance(action, HttpAction):
                self._http_attempt(run, name, action, now)
            elif kind == "start" and isinstance(action, HttpWebhookAction):
                self._begin_wait(run, name, action, now)
            elif kind == Step.SUBSCRIBE and isinstance(action, HttpWebhookAction):
                persisted = loaded.run.actions[name].wait if loaded is not None else None
                if persisted is None or persisted.nonce != run.actions[name].wait.nonce:  # type: ignore[union-attr]
                    loaded, run = self._checkpoint(loaded, run, definition, owner)  # the write-ahead
                    continue
                self._subscribe(run, name, action, now)
            elif kind == Step.POLL and isinstance(action, HttpAction):
                self._poll(run, name, action, now)
            elif kind == Step.RETRY and isinstance(action, HttpAction):
                self._http_attempt(run, name, action, now)
            else:  # pragma: no cover - _next_step only returns the pairs above
                raise AssertionError(f"no step {kind} for {type(action).__name__}")

    def _next_step(
        self, run: RunRecord, definition: WorkflowDefinition, order: list[str], now: datetime
    ) -> tuple[str, str] | None:
        """The first side effect that is due now: an action to start, or a step whose time has come."""
        if run.status.ended:
            return None
        for name in order:
            record = run.actions[name]
            action = definition.actions[name]
            if record.status == ActionStatus.PENDING and not isinstance(action, WaitAction):
                if self._ready(run, definition, name):
                    return ("start", name)
            elif (
                record.status in (ActionStatus.WAITING, ActionStatus.RUNNING)
                and record.step in (Step.SUBSCRIBE, Step.POLL, Step.RETRY)
                and record.next_at is not None
                and record.next_at <= now
            ):
                return (record.step.value, name)
        return None

    @staticmethod
    def _unstored_wait_outcome(loaded: LoadedRun | None, run: RunRecord) -> bool:
        """A webhook action is over in memory but still waiting in storage."""
        if loaded is None:
            return False
        for name, record in run.actions.items():
            stored = loaded.run.actions.get(name)
            if record.wait is not None and record.status.final and stored is not None and not stored.status.final:
                return True
        return False

    @staticmethod
    def _ready(run: RunRecord, definition: WorkflowDefinition, name: str) -> bool:
        after = definition.actions[name].run_after
        return all(run.actions[dep].status.final for dep in after) and all(
            run.actions[dep].status.value in allowed for dep, allowed in after.items()
        )

    def _settle(self, run: RunRecord, definition: WorkflowDefinition, order: list[str], now: datetime) -> None:
        """The pure steps: skips, timeouts, delays that are over, owed unsubscribes, the end."""
        changed = True
        while changed:
            changed = False
            for name in order:
                record = run.actions[name]
                action = definition.actions[name]
                if record.status == ActionStatus.PENDING and not run.status.ended:
                    after = action.run_after
                    if not all(run.actions[dep].status.final for dep in after):
                        continue
                    if not self._ready(run, definition, name):
                        record.status = ActionStatus.SKIPPED
                        record.start_time = record.end_time = now
                        changed = True
                    elif isinstance(action, WaitAction):
                        record.status = ActionStatus.WAITING
                        record.start_time = now
                        record.attempts = 1
                        record.step, record.next_at = Step.DELAY, action.inputs.due(now)
                        changed = True
                if record.status in (ActionStatus.WAITING, ActionStatus.RUNNING):
                    if record.deadline is not None and record.deadline <= now:
                        record.status = ActionStatus.TIMED_OUT
                        record.error = ErrorInfo(code="ActionTimedOut", message=f"action {name!r} timed out")
                        record.end_time = now
                        record.step = record.next_at = None
                        changed = True
                    elif record.step == Step.DELAY and record.next_at is not None and record.next_at <= now:
                        record.status = ActionStatus.SUCCEEDED
                        record.end_time = now
                        record.step = record.next_at = None
                        changed = True
                wait = record.wait
                # Subscribed, or subscribe outcome unknown (a crash between the call and its
                # record): unsubscribe. Unsubscribing a subscription that never took is
                # harmless to a target; leaving one behind is not.
                unknown = wait is not None and wait.subscribe_status is None and wait.subscribe_error is None
                if (
                    wait is not None
                    and (wait.subscribed or unknown)
                    and record.status.final
                    and wait.unsubscribe is None
                ):
                    has_spec = isinstance(action, HttpWebhookAction) and action.inputs.unsubscribe is not None
                    wait.unsubscribe = "owed" if has_spec else "done"
        if run.status.ended or not all(r.status.final for r in run.actions.values()):
            return
        failure = self._unhandled_failure(run, definition)
        run.status = RunStatus.FAILED if failure else RunStatus.SUCCEEDED
        run.error = failure
        run.end_time = now

    @staticmethod
    def _unhandled_failure(run: RunRecord, definition: WorkflowDefinition) -> ErrorInfo | None:
        """A failed or timed-out action fails the run unless an action ran because of it."""
        for name, record in run.actions.items():
            if record.status not in (ActionStatus.FAILED, ActionStatus.TIMED_OUT):
                continue
            handled = any(
                name in other.run_after
                and record.status.value in other.run_after[name]
                and run.actions[other_name].status not in (ActionStatus.SKIPPED, ActionStatus.PENDING)
                for other_name, other in definition.actions.items()
            )
            if not handled:
                code = "ActionTimedOut" if record.status == ActionStatus.TIMED_OUT else "ActionFailed"
                detail = f": {record.error.message}" if record.error else ""
                return ErrorInfo(code=code, message=f"action {name!r} {record.status.value.lower()}{detail}")
        return None

    @staticmethod
    def _resting_status(run: RunRecord) -> RunStatus:
        if run.status.ended:
            return run.status
        if any(r.status == ActionStatus.WAITING for r in run.actions.values()):
            return RunStatus.WAITING
        return RunStatus.RUNNING

    @staticmethod
    def _finished(run: RunRecord) -> bool:
        """Ended, and nothing left that needs the clock (no unsubscribe still owed)."""
        return run.status.ended and not any(
            r.wait is not None and r.wait.unsubscribe == "owed" for r in run.actions.values()
        )

    # ------------------------------------------------------------------ action types

    def _http_attempt(self, run: RunRecord, name: str, action: HttpAction, now: datetime) -> None:
        """Send an Http action's request once; decide success, failure, retry or polling."""
        record = run.actions[name]
        if record.status == ActionStatus.PENDING:
            record.status = ActionStatus.RUNNING
            record.start_time = now
            timeout = action.timeout
            record.deadline = now + timeout if timeout is not None else None
        record.step = record.next_at = None
        record.attempts += 1
        prepared = self._prepare(action.inputs, run, name, now, None)
        if isinstance(prepared, ErrorInfo):
            self._fail(record, prepared)
            return
        evaluated, request = prepared
        record.inputs = http_action.redact_inputs(evaluated)
        response, error = http_action.call(self.sender, request)
        now = self.clock()
        location = _header(response, "location") if response is not None else None
        if response is not None and response.status_code == 202 and action.async_pattern and location:
            record.status = ActionStatus.WAITING
            record.outputs = http_action.response_outputs(response)
            record.poll = PollRecord(location=urljoin(request.url, location))
            record.failures = 0
            record.error = None
            record.step, record.next_at = Step.POLL, now + _poll_interval(response, now)
            if record.deadline is None:
                record.deadline = (record.start_time or now) + self.max_wait
            return
        if self._schedule_retry(record, action.inputs.retry_policy, response, error, now, Step.RETRY):
            return
        self._finish_http(record, response, error, now)

    def _poll(self, run: RunRecord, name: str, action: HttpAction, now: datetime) -> None:
        """Poll an asynchronous action's Location, with the action's own authentication."""
        record = run.actions[name]
        assert record.poll is not None
        prepared = self._prepare(action.inputs, run, name, now, None, poll=record.poll.location)
        if isinstance(prepared, ErrorInfo):
            self._fail(record, prepared)
            return
        _, request = prepared
        response, error = http_action.call(self.sender, request)
        now = self.clock()
        if response is not None and response.status_code == 202:
            location = _header(response, "location")
            if location:
                record.poll = PollRecord(location=urljoin(record.poll.location, location))
            record.outputs = http_action.response_outputs(response)
            record.failures = 0
            record.step, record.next_at = Step.POLL, now + _poll_interval(response, now)
            return
        if self._schedule_retry(record, action.inputs.retry_policy, response, error, now, Step.POLL):
            return
        self._finish_http(record, response, error, now)

    def _finish_http(
        self, record: ActionRecord, response: OutboundResponse | None, error: ErrorInfo | None, now: datetime
    ) -> None:
        record.end_time = now
        record.step = record.next_at = None
        if response is None:
            self._fail(record, error)
            return
        record.outputs = http_action.response_outputs(response)
        record.error = http_action.outcome_error(response)
        record.status = ActionStatus.FAILED if record.error else ActionStatus.SUCCEEDED

    def _schedule_retry(
        self,
        record: ActionRecord,
        spec: Any,
        response: OutboundResponse | None,
        error: ErrorInfo | None,
        now: datetime,
        step: Step,
    ) -> bool:
        """Arrange the next attempt when the answer is worth retrying and the policy allows."""
        if response is not None and not retryable_status(response.status_code):
            return False
        record.failures += 1
        delay = Policy.of(spec).delay(record.failures, self.rand)
        if delay is None:
            return False
        if response is not None and response.status_code in (429, 503):
            asked = retry_after(response.headers, now)
            delay = asked if asked is not None else delay
        if record.deadline is not None and now + delay >= record.deadline:
            # The limit lapses before another attempt could start: the action waits out its
            # limit and ends TimedOut there, as a limit.timeout promises.
            record.step, record.next_at = None, None
            record.error = error or (http_action.outcome_error(response) if response is not None else None)
            return True
        record.step, record.next_at = step, now + delay
        record.error = error or (http_action.outcome_error(response) if response is not None else None)
        if response is not None:
            record.outputs = http_action.response_outputs(response)
        return True

    def _begin_wait(self, run: RunRecord, name: str, action: HttpWebhookAction, now: datetime) -> None:
        """Make a webhook action wait (pure): a fresh nonce, its deadline, subscribe due now."""
        record = run.actions[name]
        record.status = ActionStatus.WAITING
        record.start_time = now
        timeout = action.timeout
        record.deadline = now + (min(timeout, self.max_wait) if timeout is not None else self.max_wait)
        record.wait = WaitRecord(nonce=new_nonce())
        record.step, record.next_at = Step.SUBSCRIBE, now
        run.status = RunStatus.RUNNING

    def _subscribe(self, run: RunRecord, name: str, action: HttpWebhookAction, now: datetime) -> None:
        """Call subscribe for a wait that is already stored (so an early callback finds it)."""
        record = run.actions[name]
        wait = record.wait
        assert wait is not None
        url = self.signer.action_url(run.base_url, run.id, name, wait.nonce)
        record.attempts += 1
        record.step = record.next_at = None
        prepared = self._prepare(action.inputs.subscribe, run, name, now, url)
        if isinstance(prepared, ErrorInfo):
            wait.subscribe_error = prepared  # known never sent: nothing to unsubscribe
            self._fail(record, prepared)
            return
        evaluated, request = prepared
        # What was sent, as history shows it: the same evaluation, signature hidden.
        record.inputs = http_action.redact_inputs(http_action.replace_text(evaluated, url, redact_url(url)))
        response, error = http_action.call(self.sender, request)
        now = self.clock()
        if response is not None:
            wait.subscribe_status = response.status_code
            error = http_action.outcome_error(response)
        if error is None:
            wait.subscribed = True
            wait.subscribe_error = None
            record.failures = 0
            return
        wait.subscribe_error = error
        if self._schedule_retry(record, action.inputs.subscribe.retry_policy, response, error, now, Step.SUBSCRIBE):
            record.error = None
            return
        if wait.callback_at is None:
            # Nobody called back: the action fails on its subscribe, and its URL is void.
            self._fail(record, ErrorInfo(code="SubscribeFailed", message=error.message))

    def _owed_unsubscribes(self, run: RunRecord, now: datetime) -> list[str]:
        return [
            name
            for name, record in run.actions.items()
            if record.wait is not None
            and record.wait.unsubscribe == "owed"
            and (record.wait.unsubscribe_next_at is None or record.wait.unsubscribe_next_at <= now)
        ]

    def _unsubscribe_all(self, run: RunRecord, definition: WorkflowDefinition, names: list[str]) -> bool:
        """Unsubscribe each wait; ``True`` when every call succeeded."""
        return all(self._unsubscribe(run, definition, name) for name in names)

    def _unsubscribe(self, run: RunRecord, definition: WorkflowDefinition, name: str) -> bool:
        """Call ``unsubscribe`` for a wait that is over; retry by policy; keep a final failure."""
        action = definition.actions[name]
        record = run.actions[name]
        wait = record.wait
        assert wait is not None
        if not isinstance(action, HttpWebhookAction) or action.inputs.unsubscribe is None:
            wait.unsubscribe = "done"
            return True
        now = self.clock()
        url = self.signer.action_url(run.base_url, run.id, name, wait.nonce)
        wait.unsubscribe_attempts += 1
        prepared = self._prepare(action.inputs.unsubscribe, run, name, now, url)
        if isinstance(prepared, ErrorInfo):
            wait.unsubscribe, wait.unsubscribe_next_at, wait.unsubscribe_error = "failed", None, prepared
            return False
        _, request = prepared
        response, error = http_action.call(self.sender, request)
        if response is not None:
            error = http_action.outcome_error(response)
        if error is None:
            wait.unsubscribe, wait.unsubscribe_next_at, wait.unsubscribe_error = "done", None, None
            return True
        wait.unsubscribe_error = error
        retryable = response is None or retryable_status(response.status_code)
        delay = Policy.of(action.inputs.unsubscribe.retry_policy).delay(wait.unsubscribe_attempts, self.rand)
        if retryable and delay is not None:
            if response is not None and response.status_code in (429, 503):
                asked = retry_after(response.headers, now)
                delay = asked if asked is not None else delay
            wait.unsubscribe_next_at = now + delay
        else:
            wait.unsubscribe, wait.unsubscribe_next_at = "failed", None
            log.warning("run %s action %s: unsubscribe failed: %s", run.id, name, error.message)
        return False

    # ------------------------------------------------------------------ persistence

    def _alarm_needed(self, run: RunRecord, definition: WorkflowDefinition, now: datetime) -> datetime | None:
        """The next moment this run needs the clock, as stored; ``None`` when never again."""
        if run.lease_owner is not None and run.lease_until is not None:
            return run.lease_until  # someone is at work: if they vanish, look when the lease ends
        times: list[datetime] = []
        for record in run.actions.values():
            if record.status in (ActionStatus.WAITING, ActionStatus.RUNNING):
                times += [t for t in (record.deadline, record.next_at) if t is not None]
            if record.wait is not None and record.wait.unsubscribe == "owed":
                times.append(record.wait.unsubscribe_next_at or now)
        if self._next_step(run, definition, topological_order(definition), now) is not None:
            times.append(now)  # work left over (the inline budget ran out): the sweep goes on with it
        return min(times) if times else None

    def _persist(
        self,
        loaded: LoadedRun | None,
        run: RunRecord,
        definition: WorkflowDefinition | None = None,
        *,
        rearm: bool = False,
    ) -> LoadedRun:
        """Arm the alarm the new state needs, then create or conditionally replace the run.

        An alarm moves earlier when the run needs the clock sooner; with ``rearm`` (the alarm
        has fired) it also moves later. Raises :class:`ConcurrencyConflict` when someone else
        wrote first (the alarm written for this attempt is then an orphan the sweep drops).
        """
        now = self.clock()
        definition = definition or (loaded.definition if loaded is not None else None)
        assert definition is not None, "creating a run needs its definition"
        needed = self._alarm_needed(run, definition, now)
        if needed is not None:
            needed = max(needed, now)  # due in the past is due now; and past days' tables only shrink
        stale: datetime | None = None
        if needed is not None and (run.alarm_at is None or needed < run.alarm_at or (rearm and needed != run.alarm_at)):
            self.store.add_due(run.id, needed)
            stale, run.alarm_at = run.alarm_at, needed
        elif needed is None and run.alarm_at is not None:
            stale, run.alarm_at = run.alarm_at, None
        stored = self.store.create_run(run, definition) if loaded is None else self.store.save_run(loaded, run)
        if stale is not None:
            self._drop_alarm(run.id, stale)
        ended_now = run.status.ended and (loaded is None or not loaded.run.status.ended)
        if ended_now and definition.triggers[definition.trigger_name].max_runs is not None:
            self._give_slot(run)
        return stored

    def _drop_alarm(self, run_id: str, due_at: datetime) -> None:
        try:
            self.store.delete_due(run_id, due_at)
        except Exception:  # an alarm left behind is an orphan the sweep drops; not worth failing for
            log.warning("run %s: could not delete the alarm at %s", run_id, due_at.isoformat())

    def _checkpoint(
        self, loaded: LoadedRun | None, run: RunRecord, definition: WorkflowDefinition, owner: str
    ) -> tuple[LoadedRun, RunRecord]:
        """Persist while holding the lease, merging news that arrived meanwhile."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            try:
                return self._persist(loaded, run, definition), run
            except ConcurrencyConflict:
                loaded, run = self._merge_after_conflict(run, owner)
        raise ConcurrencyConflict(f"run {run.id!r} kept changing; gave up")

    def _merge_after_conflict(self, mine: RunRecord, owner: str) -> tuple[LoadedRun, RunRecord]:
        """Reload after a lost write and fold in what others may write while we hold the lease.

        Non-holders only ever record callbacks and heartbeats on waiting actions; everything
        else in the run is ours. When the run was taken from us (cancelled, or our lease ran
        out and someone else took it) we stop, after unsubscribing what we subscribed that
        the stored run does not know about.
        """
        theirs = self.store.load_run(mine.id)
        if theirs is None or theirs.run.lease_owner != owner:
            if theirs is not None:
                self._release_unknown_subscriptions(mine, theirs)
            log.warning("run %s: taken over by another writer; stopping here", mine.id)
            raise ConcurrencyConflict(f"run {mine.id!r} was taken over") from _LeaseLost()
        merged = False
        for name, their_record in theirs.run.actions.items():
            my_record = mine.actions.get(name)
            their_wait = their_record.wait
            my_wait = my_record.wait if my_record else None
            if my_record is None or their_wait is None or my_wait is None or my_wait.nonce != their_wait.nonce:
                continue
            if their_wait.heartbeat_at is not None and their_wait.heartbeat_at != my_wait.heartbeat_at:
                my_wait.heartbeat_at = their_wait.heartbeat_at
                if my_record.status == ActionStatus.WAITING:
                    my_record.deadline = their_record.deadline
            if their_wait.callback_at is None or my_wait.callback_at is not None:
                continue
            my_wait.callback_at = their_wait.callback_at
            my_wait.callback_id = their_wait.callback_id
            my_record.outputs = their_record.outputs
            my_record.end_time = their_record.end_time
            my_record.status = their_record.status
            my_record.error = their_record.error
            my_record.step = my_record.next_at = None
            merged = True
        if merged and mine.status.ended:
            # The run was settled without the news; let the next settle decide again.
            mine.status, mine.end_time, mine.error = RunStatus.RUNNING, None, None
        mine.alarm_at = theirs.run.alarm_at if mine.alarm_at is None else mine.alarm_at
        return theirs, mine

    def _release_unknown_subscriptions(self, mine: RunRecord, theirs: LoadedRun) -> None:
        """Unsubscribe waits we subscribed that the stored run never learned of."""
        for name, record in mine.actions.items():
            stored = theirs.run.actions.get(name)
            if record.wait is None or not record.wait.subscribed:
                continue
            known = stored is not None and stored.wait is not None and stored.wait.nonce == record.wait.nonce
            if known and stored is not None and stored.wait is not None and stored.wait.subscribed:
                continue  # they know: it is theirs to unsubscribe
            self._unsubscribe(mine, theirs.definition, name)

    # ------------------------------------------------------------------ helpers

    def _prepare(
        self,
        spec: HttpRequestSpec,
        run: RunRecord,
        name: str,
        now: datetime,
        callback_url: str | None,
        *,
        poll: str | None = None,
    ) -> tuple[dict[str, Any], OutboundRequest] | ErrorInfo:
        """Evaluate a request spec once and build the request; or the error that fails the
        action (a bad expression, an identity that would not give a token, ...)."""
        try:
            evaluated = http_action.evaluate_spec(spec, _Context(run, now, callback_url))
            if poll is not None:  # a poll reuses the action's authentication, nothing else
                evaluated = {"method": "GET", "uri": poll, "authentication": evaluated.get("authentication")}
            return evaluated, http_action.build_request(evaluated, self._correlation(run, name), self.tokens)
        except ExpressionError as exc:
            return ErrorInfo(code="InvalidTemplate", message=exc.message)
        except Exception as exc:  # e.g. azure-identity failing to get a token: the action fails, not the run
            log.warning("run %s action %s: could not build the request: %s", run.id, name, type(exc).__name__)
            return ErrorInfo(code="RequestNotBuilt", message=f"the request could not be built: {type(exc).__name__}")

    def _correlation(self, run: RunRecord, action: str) -> dict[str, str]:
        return {
            "x-ms-workflow-name": run.workflow,
            "x-ms-workflow-run-id": run.id,
            "x-ms-workflow-operation-name": action,
            "x-ms-client-tracking-id": run.client_tracking_id,
        }

    def _fail(self, record: ActionRecord, error: ErrorInfo | None) -> None:
        record.status = ActionStatus.FAILED
        record.error = error
        record.end_time = self.clock()
        record.step = record.next_at = None

    @staticmethod
    def _owner() -> str:
        return secrets.token_hex(8)


_VOLATILE = {"alarm_at", "lease_owner", "lease_until"}


def _same(before: RunRecord, after: RunRecord) -> bool:
    """Equal but for the bookkeeping a wake changes (alarm, lease)."""
    return before.model_dump(exclude=_VOLATILE) == after.model_dump(exclude=_VOLATILE)


def _poll_interval(response: OutboundResponse, now: datetime) -> timedelta:
    asked = retry_after(response.headers, now)
    return asked if asked is not None else DEFAULT_POLL_INTERVAL


def _header(response: OutboundResponse | None, name: str) -> str | None:
    if response is None:
        return None
    return next((v for k, v in response.headers.items() if k.lower() == name), None)


def _error_text(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return text[:2000] if text else "the target reported a failure"


def render_run(run: RunRecord, callback_urls: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run JSON of the HTTP contract (DESIGN.md section 4)."""

    def iso(value: datetime | None) -> str | None:
        return to_iso(value) if value else None

    actions: dict[str, Any] = {}
    for name, record in run.actions.items():
        shown: dict[str, Any] = {
            "status": record.status.value,
            "startTime": iso(record.start_time),
            "endTime": iso(record.end_time),
            "inputs": record.inputs,
            "outputs": record.outputs,
            "error": record.error.model_dump() if record.error else None,
            "attempts": record.attempts,
        }
        if not record.status.final:
            if record.deadline is not None:
                shown["timeoutTime"] = iso(record.deadline)
            if record.step is not None and record.next_at is not None:
                shown["next"] = {"step": record.step.value, "time": iso(record.next_at)}
        if record.wait is not None:
            shown["subscription"] = {
                "subscribed": record.wait.subscribed,
                "statusCode": record.wait.subscribe_status,
                "error": record.wait.subscribe_error.model_dump() if record.wait.subscribe_error else None,
                "unsubscribeError": (
                    record.wait.unsubscribe_error.model_dump() if record.wait.unsubscribe_error else None
                ),
            }
        if callback_urls and name in callback_urls:
            shown["callbackUrl"] = callback_urls[name]
        actions[name] = shown
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status.value,
        "startTime": iso(run.start_time),
        "endTime": iso(run.end_time),
        "clientTrackingId": run.client_tracking_id,
        "trigger": {"name": run.trigger.name, "outputs": run.trigger.outputs},
        "actions": actions,
        "error": run.error.model_dump() if run.error else None,
    }


__all__ = [
    "Engine",
    "InboundRequest",
    "OutboundRequest",
    "SweepReport",
    "expressions",
    "new_run_id",
    "render_run",
    "utc_now",
]
