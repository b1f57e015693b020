"""Advance a run until it suspends or ends.

The rules that keep a run correct without holding anything in memory between requests:

* **One advancer.** A run carries a lease (owner, expiry). Only the holder runs actions.
  Anyone else who has news for the run (a callback that arrives while the start request is
  still subscribing) records just that news, with an ETag-conditional write, and leaves the
  rest to the holder, who finds it on its next write (a conflict: reload, merge, go on).
* **Write before side effects that others can observe.** An ``HttpWebhook`` action is
  written as ``Waiting`` with its wait nonce *before* ``subscribe`` is called (write-ahead),
  so a callback that comes back before ``subscribe`` returns finds its wait. A party that is
  not yet the holder writes its claim before it calls anything.
* **Pure steps are free.** Skipping, settling the run's status and ending the run happen in
  memory and ride along with the next write, so a callback that ends a run costs one read
  and one write.
* **Exactly one party unsubscribes**: the one whose write turns a wait into "subscribed and
  over". Writes are serialised by ETag, so exactly one write makes that transition.

Storage transactions in the life of a one-webhook run: read the workflow, insert the run
(the write-ahead), record the subscribe, read the run on callback, write the ended run.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import expressions
from shared.actions import http as http_action
from shared.errors import (
    AlreadyExists,
    BadRequest,
    ConcurrencyConflict,
    Conflict,
    ExpressionError,
    Gone,
    NotFound,
    PayloadTooLarge,
)
from shared.models import (
    ActionRecord,
    ActionStatus,
    ErrorInfo,
    HttpAction,
    HttpWebhookAction,
    RunRecord,
    RunStatus,
    TriggerRecord,
    WaitRecord,
    WorkflowDefinition,
    WorkflowState,
    topological_order,
)
from shared.outbound import OutboundRequest, Sender, decode_body
from shared.signing import CallbackSigner, new_nonce, redact_url
from shared.store import LoadedRun, Store

log = logging.getLogger("hookflow.engine")

Clock = Callable[[], datetime]

_MAX_CONFLICT_RETRIES = 20


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
            import json

            try:
                body: Any = json.loads(self.body)
            except ValueError as exc:
                raise BadRequest("the body is not valid JSON", code="InvalidJson") from exc
        else:
            body = decode_body(self.body, content_type)
        return {"headers": http_action.redact_headers(dict(self.headers)), "body": body}


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


class Engine:
    """Starts runs, receives callbacks and advances runs. Takes its adapters as arguments."""

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
        tokens: http_action.TokenProvider | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.signer = signer
        self.max_body_bytes = max_body_bytes
        self.public_base_url = public_base_url.rstrip("/")
        self.clock = clock
        self.lease = lease
        self.tokens = tokens or http_action.TokenProvider()

    # ------------------------------------------------------------------ public operations

    def start_run(self, workflow: str, request: InboundRequest, *, idempotency_key: str | None = None) -> RunRecord:
        """Create a run from a trigger request and advance it until it suspends or ends."""
        stored = self.store.get_workflow(workflow)
        if stored is None:
            raise NotFound(f"workflow {workflow!r} does not exist", code="WorkflowNotFound")
        if stored.state != WorkflowState.ENABLED:
            raise Conflict(f"workflow {workflow!r} is disabled", code="WorkflowDisabled")
        self.check_body_size(request.body)
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
            loaded = self._advance(None, run, definition, owner=owner, claimed=True)
        except AlreadyExists:
            # Only an idempotent retry can collide on the id; the other attempt won.
            existing = self.store.load_run(run_id)
            if existing is None:
                raise
            return existing.run
        return loaded.run

    def get_run(self, run_id: str) -> LoadedRun:
        loaded = self.store.load_run(run_id)
        if loaded is None:
            raise NotFound(f"run {run_id!r} does not exist", code="RunNotFound")
        return loaded

    def receive_action_callback(
        self, run_id: str, action: str, query: Mapping[str, str], request: InboundRequest
    ) -> RunRecord:
        """Resume a waiting webhook action. Exactly one callback per wait wins.

        Raises Unauthorized (bad signature), PayloadTooLarge, Conflict (already resumed) or
        Gone (the wait is over); none of them changes anything.
        """
        target = self.signer.verify_action(run_id, action, query)
        self.check_body_size(request.body)
        received = request.outputs()
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
                raise Conflict("an earlier callback already resumed this wait", code="AlreadyResumed")
            if record.status != ActionStatus.WAITING or run.status.ended:
                raise Gone(f"the wait ended with status {record.status.value}", code="WaitGone")
            now = self.clock()
            wait.callback_at = now
            record.outputs = {"statusCode": 200, **received}
            record.status = ActionStatus.SUCCEEDED
            record.end_time = now
            owner = self._owner()
            try:
                if run.lease_free(now, owner):
                    loaded = self._advance(loaded, run, loaded.definition, owner=owner, claimed=False)
                else:
                    # The holder is still at work (typically: still inside subscribe). Record
                    # the news; the holder merges it on its next write.
                    loaded = self._persist_and_unsubscribe(loaded, run, loaded.definition)
            except ConcurrencyConflict:
                continue
            return loaded.run
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

    # ------------------------------------------------------------------ advancing

    def _advance(
        self, loaded: LoadedRun | None, run: RunRecord, definition: WorkflowDefinition, *, owner: str, claimed: bool
    ) -> LoadedRun:
        """Run actions until the run suspends or ends; persist; return the persisted run.

        ``claimed`` says whether ``owner`` already holds the lease *in storage* (or the run
        is not stored yet, so nobody else can know it). When it does not, the first side
        effect is preceded by a write that takes the lease; a conflict on that write is
        raised so that the caller decides again from fresh state.
        """
        order = topological_order(definition)
        while True:
            now = self.clock()
            if claimed:
                run.lease_owner = owner
                run.lease_until = now + self.lease
            self._settle(run, definition, order, now)
            ready = None if run.status.ended else self._next_ready(run, definition, order)
            if ready is None:
                run.lease_owner = None
                run.lease_until = None
                run.status = self._resting_status(run)
                try:
                    loaded = self._persist_and_unsubscribe(loaded, run, definition)
                except ConcurrencyConflict:
                    if not claimed:
                        raise
                    loaded, run = self._merge_after_conflict(run, owner)
                    if loaded is None:
                        raise
                    continue
                return loaded
            if not claimed:
                run.lease_owner = owner
                run.lease_until = now + self.lease
                run.status = RunStatus.RUNNING
                loaded = self._persist_and_unsubscribe(loaded, run, definition)
                claimed = True
            action = definition.actions[ready]
            if isinstance(action, HttpAction):
                self._run_http(run, ready, action, now)
            elif isinstance(action, HttpWebhookAction):
                loaded, run = self._run_webhook(loaded, run, definition, ready, action, owner)

    def _next_ready(self, run: RunRecord, definition: WorkflowDefinition, order: list[str]) -> str | None:
        for name in order:
            record = run.actions[name]
            if record.status != ActionStatus.PENDING:
                continue
            if all(run.actions[dep].status.final for dep in definition.actions[name].run_after):
                return name
        return None

    def _settle(self, run: RunRecord, definition: WorkflowDefinition, order: list[str], now: datetime) -> None:
        """The pure steps: skip actions whose runAfter cannot be met; end the run when done."""
        changed = True
        while changed:
            changed = False
            for name in order:
                record = run.actions[name]
                if record.status != ActionStatus.PENDING:
                    continue
                after = definition.actions[name].run_after
                if not all(run.actions[dep].status.final for dep in after):
                    continue
                if not all(run.actions[dep].status.value in allowed for dep, allowed in after.items()):
                    record.status = ActionStatus.SKIPPED
                    record.start_time = record.end_time = now
                    changed = True
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

    # ------------------------------------------------------------------ action types

    def _run_http(self, run: RunRecord, name: str, action: HttpAction, now: datetime) -> None:
        record = run.actions[name]
        record.status = ActionStatus.RUNNING
        record.start_time = now
        record.attempts += 1
        try:
            evaluated = http_action.evaluate_spec(action.inputs, _Context(run, now, None))
            request = http_action.build_request(evaluated, self._correlation(run, name), self.tokens)
        except ExpressionError as exc:
            self._fail(record, ErrorInfo(code="InvalidTemplate", message=exc.message))
            return
        record.inputs = http_action.redact_inputs(evaluated)
        response, error = http_action.call(self.sender, request)
        record.end_time = self.clock()
        if response is None:
            self._fail(record, error)
            return
        record.outputs = http_action.response_outputs(response)
        error = http_action.outcome_error(response)
        record.error = error
        record.status = ActionStatus.FAILED if error else ActionStatus.SUCCEEDED

    def _run_webhook(
        self,
        loaded: LoadedRun | None,
        run: RunRecord,
        definition: WorkflowDefinition,
        name: str,
        action: HttpWebhookAction,
        owner: str,
    ) -> tuple[LoadedRun, RunRecord]:
        now = self.clock()
        record = run.actions[name]
        nonce = new_nonce()
        url = self.signer.action_url(run.base_url, run.id, name, nonce)
        try:
            evaluated = http_action.evaluate_spec(action.inputs.subscribe, _Context(run, now, url))
            shown = http_action.evaluate_spec(action.inputs.subscribe, _Context(run, now, redact_url(url)))
            request = http_action.build_request(evaluated, self._correlation(run, name), self.tokens)
        except ExpressionError as exc:
            record.start_time = now
            self._fail(record, ErrorInfo(code="InvalidTemplate", message=exc.message))
            return self._checkpoint(loaded, run, definition, owner)
        record.status = ActionStatus.WAITING
        record.start_time = now
        record.attempts += 1
        record.inputs = http_action.redact_inputs(shown)
        record.wait = WaitRecord(nonce=nonce)
        run.status = RunStatus.RUNNING
        loaded, run = self._checkpoint(loaded, run, definition, owner)  # the write-ahead

        response, error = http_action.call(self.sender, request)
        if response is not None:
            error = http_action.outcome_error(response)
        record = run.actions[name]
        wait = record.wait
        assert wait is not None
        wait.subscribe_status = response.status_code if response is not None else None
        if error is None:
            wait.subscribed = True
        else:
            wait.subscribe_error = error
            if wait.callback_at is None:
                # Nobody called back: the action fails on its subscribe, and its URL is void.
                self._fail(record, ErrorInfo(code="SubscribeFailed", message=error.message))
        return loaded, run

    def _checkpoint(
        self, loaded: LoadedRun | None, run: RunRecord, definition: WorkflowDefinition, owner: str
    ) -> tuple[LoadedRun, RunRecord]:
        """Persist while holding the lease, merging news that arrived meanwhile."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            try:
                return self._persist_and_unsubscribe(loaded, run, definition), run
            except ConcurrencyConflict:
                merged, run = self._merge_after_conflict(run, owner)
                if merged is None:
                    raise
                loaded = merged
        raise ConcurrencyConflict(f"run {run.id!r} kept changing; gave up")

    def _merge_after_conflict(self, mine: RunRecord, owner: str) -> tuple[LoadedRun | None, RunRecord]:
        """Reload after a lost write and fold in what others may write while we hold the lease.

        Non-holders only ever record callbacks on waiting actions; everything else in the
        run is ours. Returns ``(None, mine)`` when the run is gone or the lease was lost.
        """
        theirs = self.store.load_run(mine.id)
        if theirs is None:
            return None, mine
        if theirs.run.lease_owner != owner:
            log.warning("run %s: lease lost to another advancer; stopping here", mine.id)
            return None, mine
        merged = False
        for name, their_record in theirs.run.actions.items():
            my_record = mine.actions.get(name)
            their_wait = their_record.wait
            if my_record is None or their_wait is None or their_wait.callback_at is None:
                continue
            my_wait = my_record.wait
            if my_wait is None or my_wait.nonce != their_wait.nonce or my_wait.callback_at is not None:
                continue
            my_wait.callback_at = their_wait.callback_at
            my_record.outputs = their_record.outputs
            my_record.end_time = their_record.end_time
            my_record.status = their_record.status
            my_record.error = their_record.error
            merged = True
        if merged and mine.status.ended:
            # The run was settled without the news; let the next settle decide again.
            mine.status, mine.end_time, mine.error = RunStatus.RUNNING, None, None
        return theirs, mine

    # ------------------------------------------------------------------ persistence

    def _persist(
        self, loaded: LoadedRun | None, run: RunRecord, definition: WorkflowDefinition
    ) -> tuple[LoadedRun, list[str]]:
        """Create or conditionally replace the run; return it and the waits this write closed.

        A wait is *closed* by the write that first stores it as subscribed and over; that
        writer owes its unsubscribe.
        """
        before = loaded.run.actions if loaded is not None else {}
        stored = self.store.create_run(run, definition) if loaded is None else self.store.save_run(loaded, run)
        closed = [
            name
            for name, record in run.actions.items()
            if _closed(record) and not (name in before and _closed(before[name]))
        ]
        return stored, closed

    def _persist_and_unsubscribe(
        self, loaded: LoadedRun | None, run: RunRecord, definition: WorkflowDefinition
    ) -> LoadedRun:
        stored, closed = self._persist(loaded, run, definition)
        failed = [name for name in closed if not self._unsubscribe(run, definition, name)]
        if failed and run.lease_owner is None:
            # No later write of ours will carry the failure: record it now (best effort).
            stored = self._record_unsubscribe_failures(stored, failed)
        return stored

    def _record_unsubscribe_failures(self, stored: LoadedRun, names: list[str]) -> LoadedRun:
        errors = {name: stored.run.actions[name].wait.unsubscribe_error for name in names}  # type: ignore[union-attr]
        current: LoadedRun | None = stored
        for _ in range(_MAX_CONFLICT_RETRIES):
            if current is None:
                break
            run = current.run.model_copy(deep=True)
            for name, error in errors.items():
                wait = run.actions[name].wait
                if wait is not None:
                    wait.unsubscribe_error = error
            try:
                return self.store.save_run(current, run)
            except ConcurrencyConflict:
                current = self.store.load_run(run.id)
        log.warning("run %s: could not record an unsubscribe failure", stored.run.id)
        return stored

    def _unsubscribe(self, run: RunRecord, definition: WorkflowDefinition, name: str) -> bool:
        """Call ``unsubscribe`` for a closed wait; on failure keep the error on the action."""
        action = definition.actions[name]
        if not isinstance(action, HttpWebhookAction) or action.inputs.unsubscribe is None:
            return True
        record = run.actions[name]
        assert record.wait is not None
        url = self.signer.action_url(run.base_url, run.id, name, record.wait.nonce)
        try:
            evaluated = http_action.evaluate_spec(action.inputs.unsubscribe, _Context(run, self.clock(), url))
            request = http_action.build_request(evaluated, self._correlation(run, name), self.tokens)
        except ExpressionError as exc:
            record.wait.unsubscribe_error = ErrorInfo(code="InvalidTemplate", message=exc.message)
            return False
        response, error = http_action.call(self.sender, request)
        if response is not None:
            error = http_action.outcome_error(response)
        if error is not None:
            record.wait.unsubscribe_error = error
            log.warning("run %s action %s: unsubscribe failed: %s", run.id, name, error.message)
            return False
        return True

    # ------------------------------------------------------------------ helpers

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

    @staticmethod
    def _owner() -> str:
        return secrets.token_hex(8)


def _closed(record: ActionRecord) -> bool:
    return record.wait is not None and record.wait.subscribed and record.status.final


def render_run(run: RunRecord, callback_urls: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run JSON of the HTTP contract (DESIGN.md section 4)."""

    def iso(value: datetime | None) -> str | None:
        return http_action.iso(value.astimezone(UTC)) if value else None

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


__all__ = ["Engine", "InboundRequest", "OutboundRequest", "expressions", "new_run_id", "render_run", "utc_now"]
