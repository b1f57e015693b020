"""The engine against ``MemoryStore`` and ``FakeSender``: runs, waits, callbacks, failures, cost.

Every test drives the engine the way the HTTP functions do: a workflow is saved with
``Workflows.put``, a run is started from an ``InboundRequest``, and a target calls back by
POSTing to the URL it was given in ``subscribe`` (taken apart as the Functions route would).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from shared.engine import Engine, render_run
from shared.errors import BadRequest, Conflict, Gone, NotFound, PayloadTooLarge, Unauthorized
from shared.models import ActionStatus, RunRecord, RunStatus
from shared.outbound import OutboundError, OutboundRequest, OutboundResponse
from shared.signing import CallbackSigner, new_nonce
from shared.store import LoadedRun, MemoryStore
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
from tests.unit.fakes import FakeClock, FakeSender, respond

MAX_BODY = 4096
SIGNING_KEY = b"unit-test-signing-key"
CORRELATION_HEADERS = (
    "x-ms-workflow-name",
    "x-ms-workflow-run-id",
    "x-ms-workflow-operation-name",
    "x-ms-client-tracking-id",
)


@dataclass
class Harness:
    """An engine wired to in-memory adapters, with the steps a test takes spelled out."""

    store: MemoryStore
    sender: FakeSender
    clock: FakeClock
    engine: Engine

    def save(self, actions: dict[str, Any], name: str = "wf") -> None:
        Workflows(self.engine).put(name, put_body(definition(actions)))

    def start(
        self,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        workflow: str = "wf",
    ) -> RunRecord:
        request = inbound({} if body is None else body, headers=headers)
        return self.engine.start_run(workflow, request, idempotency_key=idempotency_key)

    def subscribe_calls(self, action: str | None = None) -> list[OutboundRequest]:
        """The subscribe requests, all or those of one action (told apart by the correlation header)."""
        return [
            r
            for r in self.sender.requests
            if r.body is not None
            and isinstance(r.body, dict)
            and "callbackUrl" in r.body
            and not r.url.startswith(UNSUBSCRIBE_URI)
            and (action is None or r.headers.get("x-ms-workflow-operation-name") == action)
        ]

    def address(self, action: str = "W") -> CallbackAddress:
        """The callback URL the target was given in the (only) subscribe of ``action``."""
        (call,) = self.subscribe_calls(action)
        assert isinstance(call.body, dict)
        return parse_callback_url(call.body["callbackUrl"])

    def call_back(
        self, address: CallbackAddress, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> RunRecord:
        request = callback_request(address, {"approved": True} if body is None else body, headers=headers)
        return self.engine.receive_action_callback(address.run_id, address.action, address.query, request)

    def stored(self, run_id: str) -> LoadedRun:
        loaded = self.store.load_run(run_id)
        assert loaded is not None
        return loaded

    def snapshot(self, run_id: str) -> tuple[str, dict[str, Any]]:
        """The stored run and its ETag: equal snapshots mean nothing was written."""
        loaded = self.stored(run_id)
        return loaded.etag, loaded.run.model_dump(mode="json")

    def rendered(self, run_id: str) -> dict[str, Any]:
        return render_run(self.stored(run_id).run)


@pytest.fixture
def h() -> Harness:
    store = MemoryStore()
    sender = FakeSender()
    clock = FakeClock()
    engine = Engine(store, sender, CallbackSigner([SIGNING_KEY]), max_body_bytes=MAX_BODY, clock=clock)
    return Harness(store=store, sender=sender, clock=clock, engine=engine)


def status_of(run: RunRecord) -> dict[str, str]:
    return {name: record.status.value for name, record in run.actions.items()}


class TestWebhookRun:
    def test_start_suspends_the_run(self, h: Harness) -> None:
        """Starting a run that reaches a webhook leaves it ``Waiting``, in the answer and in storage."""
        h.save({"W": webhook_action()})

        run = h.start({"order": 42})

        assert run.status == RunStatus.WAITING
        assert run.actions["W"].status == ActionStatus.WAITING
        stored = h.rendered(run.id)
        assert stored["status"] == "Waiting"
        assert stored["endTime"] is None
        assert stored["trigger"]["outputs"]["body"] == {"order": 42}
        assert stored["actions"]["W"]["subscription"]["subscribed"] is True

    def test_subscribe_gets_the_callback_url_in_uri_headers_and_body(self, h: Harness) -> None:
        """``@listCallbackUrl()`` evaluates to the same signed URL wherever subscribe uses it."""
        h.save(
            {
                "W": webhook_action(
                    subscribe_uri=SUBSCRIBE_URI + "?cb=@{listCallbackUrl()}",
                    subscribe_headers={"X-Callback": "@listCallbackUrl()"},
                    subscribe_body={"callbackUrl": "@listCallbackUrl()", "note": "to @{listCallbackUrl()}"},
                )
            }
        )

        run = h.start()

        (call,) = h.sender.requests
        assert isinstance(call.body, dict)
        url = call.body["callbackUrl"]
        assert call.method == "POST"
        assert call.url == f"{SUBSCRIBE_URI}?cb={url}"
        assert call.headers["X-Callback"] == url
        assert call.body["note"] == f"to {url}"
        address = parse_callback_url(url)
        assert (address.run_id, address.action) == (run.id, "W")
        assert CallbackSigner([SIGNING_KEY]).verify_action(address.run_id, address.action, address.query)

    def test_waiting_run_shows_its_live_callback_url(self, h: Harness) -> None:
        """While waiting, the engine can show the signed URL that was handed to the target."""
        h.save({"W": webhook_action()})
        run = h.start()

        assert h.engine.callback_urls(h.stored(run.id).run) == {"W": h.address().url}

    def test_outbound_calls_carry_correlation_headers(self, h: Harness) -> None:
        """Subscribe and unsubscribe name the workflow, run, action and client tracking id."""
        h.save({"W": webhook_action()})
        run = h.start(headers={"x-ms-client-tracking-id": "order-42"})
        h.call_back(h.address())

        expected = {
            "x-ms-workflow-name": "wf",
            "x-ms-workflow-run-id": run.id,
            "x-ms-workflow-operation-name": "W",
            "x-ms-client-tracking-id": "order-42",
        }
        assert len(h.sender.requests) == 2
        for call in h.sender.requests:
            assert {k: call.headers.get(k) for k in CORRELATION_HEADERS} == expected

    def test_client_tracking_id_defaults_to_the_run_id(self, h: Harness) -> None:
        """Without a client tracking id from the caller, the run id stands in for it."""
        h.save({"W": webhook_action()})

        run = h.start()

        assert h.sender.requests[0].headers["x-ms-client-tracking-id"] == run.id

    def test_nothing_is_unsubscribed_while_waiting(self, h: Harness) -> None:
        """A waiting action stays subscribed."""
        h.save({"W": webhook_action()})

        h.start()

        assert h.sender.to(UNSUBSCRIBE_URI) == []

    def test_callback_completes_the_run_with_its_request_as_outputs(self, h: Harness) -> None:
        """The callback's status, headers and body become the action's outputs and the run succeeds."""
        h.save({"W": webhook_action()})
        run = h.start()
        h.clock.advance(30)

        resumed = h.call_back(h.address(), {"decision": "approve"}, headers={"X-Reviewer": "ann"})

        assert resumed.status == RunStatus.SUCCEEDED
        stored = h.rendered(run.id)
        assert stored["status"] == "Succeeded"
        assert stored["error"] is None
        assert stored["endTime"] == "2026-01-01T12:00:30.000000Z"
        action = stored["actions"]["W"]
        assert action["status"] == "Succeeded"
        assert action["endTime"] == "2026-01-01T12:00:30.000000Z"
        assert action["outputs"] == {
            "statusCode": 200,
            "headers": {"X-Reviewer": "ann", "Content-Type": "application/json"},
            "body": {"decision": "approve"},
        }

    def test_callback_with_text_body(self, h: Harness) -> None:
        """A plain-text callback body is recorded as a string."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()

        request = callback_request(address, headers={"Content-Type": "text/plain"}, raw=b"approved")
        h.engine.receive_action_callback(address.run_id, address.action, address.query, request)

        assert h.rendered(run.id)["actions"]["W"]["outputs"]["body"] == "approved"

    def test_unsubscribe_is_called_once_with_the_same_url(self, h: Harness) -> None:
        """After the callback, unsubscribe is called exactly once with the URL subscribe was given."""
        h.save({"W": webhook_action()})
        h.start()
        address = h.address()

        h.call_back(address)

        (unsubscribe,) = h.sender.to(UNSUBSCRIBE_URI)
        assert unsubscribe.method == "POST"
        assert unsubscribe.body == {"callbackUrl": address.url}

    def test_second_callback_is_a_conflict_and_changes_nothing(self, h: Harness) -> None:
        """A second POST to the same URL answers 409 and leaves the run as the first one left it."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()
        h.call_back(address, {"n": 1})
        before = h.snapshot(run.id)
        sent = len(h.sender.requests)

        with pytest.raises(Conflict) as caught:
            h.call_back(address, {"n": 2})

        assert caught.value.status == 409
        assert h.snapshot(run.id) == before
        assert len(h.sender.requests) == sent

    def test_bad_signature_is_unauthorized_and_changes_nothing(self, h: Harness) -> None:
        """A callback whose signature does not match answers 401 and the run keeps waiting."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()
        forged = CallbackAddress(address.url, address.run_id, address.action, {**address.query, "sig": "x" * 43})
        before = h.snapshot(run.id)

        with pytest.raises(Unauthorized) as caught:
            h.call_back(forged)

        assert caught.value.status == 401
        assert h.snapshot(run.id) == before
        assert h.sender.to(UNSUBSCRIBE_URI) == []

    def test_callback_body_over_the_limit_is_refused_and_changes_nothing(self, h: Harness) -> None:
        """A callback body over the limit answers 413; the wait stays open for a proper callback."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()
        before = h.snapshot(run.id)

        with pytest.raises(PayloadTooLarge) as caught:
            h.call_back(address, {"blob": "x" * MAX_BODY})

        assert caught.value.status == 413
        assert h.snapshot(run.id) == before
        assert h.call_back(address, {"ok": 1}).status == RunStatus.SUCCEEDED

    def test_callback_with_invalid_json_is_refused_and_changes_nothing(self, h: Harness) -> None:
        """A callback declaring JSON that does not parse answers 400 and the wait stays open."""
        h.save({"W": webhook_action()})
        run = h.start()
        address = h.address()
        before = h.snapshot(run.id)
        request = callback_request(address, headers={"Content-Type": "application/json"}, raw=b"{not json")

        with pytest.raises(BadRequest):
            h.engine.receive_action_callback(address.run_id, address.action, address.query, request)

        assert h.snapshot(run.id) == before

    def test_url_of_an_earlier_wait_is_gone(self, h: Harness) -> None:
        """A correctly signed URL whose nonce is not the current wait's answers 410."""
        h.save({"W": webhook_action()})
        run = h.start()
        stale = parse_callback_url(h.engine.signer.action_url(run.base_url, run.id, "W", new_nonce()))
        before = h.snapshot(run.id)

        with pytest.raises(Gone) as caught:
            h.call_back(stale)

        assert caught.value.status == 410
        assert h.snapshot(run.id) == before

    def test_url_of_an_unknown_run_is_gone(self, h: Harness) -> None:
        """A signed URL for a run that does not exist (any more) answers 410."""
        h.save({"W": webhook_action()})
        run = h.start()
        other = parse_callback_url(h.engine.signer.action_url(run.base_url, "0" * 29, "W", new_nonce()))

        with pytest.raises(Gone):
            h.call_back(other)

    def test_trigger_body_over_the_limit_starts_nothing(self, h: Harness) -> None:
        """A start request over the body limit answers 413 and creates no run."""
        h.save({"W": webhook_action()})

        with pytest.raises(PayloadTooLarge):
            h.start({"blob": "x" * MAX_BODY})

        assert h.store.list_runs("wf", status=None, top=10, continuation=None)[0] == []
        assert h.sender.requests == []

    def test_unknown_workflow_is_not_found(self, h: Harness) -> None:
        """Starting a workflow that was never saved answers 404."""
        with pytest.raises(NotFound):
            h.start(workflow="missing")


class TestCallbackInsideSubscribe:
    """A target that POSTs to the callback URL before its subscribe call has returned."""

    def early_target(self, h: Harness, answer: OutboundResponse, body: Any) -> list[RunRecord]:
        """Route subscribe to a handler that calls back re-entrantly, then answers ``answer``."""
        results: list[RunRecord] = []

        def subscribe(request: OutboundRequest) -> OutboundResponse:
            assert isinstance(request.body, dict)
            results.append(h.call_back(parse_callback_url(request.body["callbackUrl"]), body))
            return answer

        h.sender.route(SUBSCRIBE_URI, subscribe)
        return results

    def test_run_succeeds_with_the_early_callback_as_outputs(self, h: Harness) -> None:
        """The run ends ``Succeeded`` with the callback recorded as the action's outputs."""
        h.save({"W": webhook_action()})
        early = self.early_target(h, respond(200), {"early": True})

        run = h.start()

        assert len(early) == 1
        assert run.status == RunStatus.SUCCEEDED
        stored = h.rendered(run.id)
        assert stored["status"] == "Succeeded"
        assert stored["actions"]["W"]["status"] == "Succeeded"
        assert stored["actions"]["W"]["outputs"]["body"] == {"early": True}
        assert stored["actions"]["W"]["subscription"]["subscribed"] is True

    def test_outputs_are_recorded_once(self, h: Harness) -> None:
        """The early callback wins the wait: a repeat of it is a conflict and the outputs stay."""
        h.save({"W": webhook_action()})
        self.early_target(h, respond(200), {"early": True})
        run = h.start()
        address = h.address()
        before = h.snapshot(run.id)

        with pytest.raises(Conflict):
            h.call_back(address, {"late": True})

        assert h.snapshot(run.id) == before
        assert h.rendered(run.id)["actions"]["W"]["outputs"]["body"] == {"early": True}

    def test_unsubscribe_once_after_subscribe_returned(self, h: Harness) -> None:
        """Unsubscribe is called exactly once, and never while subscribe is still in flight."""
        h.save({"W": webhook_action()})
        self.early_target(h, respond(200), {"early": True})

        h.start()

        unsubscribes = [e for e in h.sender.events if e == ("start", UNSUBSCRIBE_URI)]
        assert len(unsubscribes) == 1
        subscribe_end = h.sender.events.index(("end", SUBSCRIBE_URI))
        assert h.sender.events.index(("start", UNSUBSCRIBE_URI)) > subscribe_end

    def test_run_continues_after_the_early_callback(self, h: Harness) -> None:
        """Actions after the webhook run once, with the early callback's body available to them."""
        h.save(
            {
                "W": webhook_action(),
                "Next": http_action(f"{TARGET}/next/@{{body('W')['id']}}", run_after={"W": ["Succeeded"]}),
            }
        )
        self.early_target(h, respond(200), {"id": "abc"})

        run = h.start()

        assert run.status == RunStatus.SUCCEEDED
        assert [r.url for r in h.sender.to(f"{TARGET}/next/abc")] == [f"{TARGET}/next/abc"]

    def test_subscribe_failing_after_an_early_callback_leaves_run_and_action_agreeing(self, h: Harness) -> None:
        """A target that calls back and then answers subscribe with 500 leaves a run that agrees with its action."""
        # The engine's own rule is that a callback that arrived wins over a failed subscribe
        # ("Nobody called back: the action fails on its subscribe"), so both are Succeeded.
        h.save({"W": webhook_action()})
        self.early_target(h, respond(500), {"early": True})

        run = h.start()

        stored = h.rendered(run.id)
        assert stored["actions"]["W"]["status"] == "Succeeded"
        assert stored["actions"]["W"]["outputs"]["body"] == {"early": True}
        assert (stored["status"], stored["error"]) == ("Succeeded", None)


class TestSubscribeFailure:
    def test_subscribe_answering_500_fails_the_action_and_the_run(self, h: Harness) -> None:
        """A subscribe answered with 500 fails the action with ``SubscribeFailed`` and the run with it."""
        h.save({"W": webhook_action()})
        h.sender.route(SUBSCRIBE_URI, respond(500, {"error": "down"}))

        run = h.start()

        assert run.status == RunStatus.FAILED
        stored = h.rendered(run.id)
        assert stored["status"] == "Failed"
        assert stored["error"]["code"] == "ActionFailed"
        action = stored["actions"]["W"]
        assert action["status"] == "Failed"
        assert action["error"]["code"] == "SubscribeFailed"
        assert action["subscription"]["statusCode"] == 500
        assert action["subscription"]["subscribed"] is False

    def test_failed_subscribe_is_not_unsubscribed(self, h: Harness) -> None:
        """Nothing was subscribed, so nothing is unsubscribed."""
        h.save({"W": webhook_action()})
        h.sender.route(SUBSCRIBE_URI, respond(500))

        h.start()

        assert h.sender.to(UNSUBSCRIBE_URI) == []

    def test_callback_after_a_failed_subscribe_is_gone(self, h: Harness) -> None:
        """The URL handed to a failed subscribe is void: a later callback answers 410."""
        h.save({"W": webhook_action()})
        h.sender.route(SUBSCRIBE_URI, respond(500))
        run = h.start()
        before = h.snapshot(run.id)

        with pytest.raises(Gone):
            h.call_back(h.address())

        assert h.snapshot(run.id) == before

    def test_subscribe_without_an_answer_fails_the_action(self, h: Harness) -> None:
        """A subscribe that gets no answer at all (connection refused) fails the same way."""
        h.save({"W": webhook_action()})

        def refuse(request: OutboundRequest) -> OutboundResponse:
            raise OutboundError("ConnectionFailed", "could not connect to target.example")

        h.sender.route(SUBSCRIBE_URI, refuse)

        run = h.start()

        assert run.status == RunStatus.FAILED
        assert h.rendered(run.id)["actions"]["W"]["error"]["code"] == "SubscribeFailed"
        assert h.sender.to(UNSUBSCRIBE_URI) == []


class TestUnsubscribeFailure:
    def test_run_succeeds_and_the_failure_is_shown_on_the_action(self, h: Harness) -> None:
        """An unsubscribe answered with 500 does not fail the run; the action shows the error."""
        h.save({"W": webhook_action()})
        h.sender.route(UNSUBSCRIBE_URI, respond(500))
        run = h.start()

        resumed = h.call_back(h.address())

        assert resumed.status == RunStatus.SUCCEEDED
        stored = h.rendered(run.id)
        assert stored["status"] == "Succeeded"
        assert stored["actions"]["W"]["status"] == "Succeeded"
        error = stored["actions"]["W"]["subscription"]["unsubscribeError"]
        assert error is not None
        assert error["code"] == "UnexpectedStatusCode"
        assert "500" in error["message"]
        assert len(h.sender.to(UNSUBSCRIBE_URI)) == 1


class TestHttpActions:
    def test_response_is_recorded_as_outputs(self, h: Harness) -> None:
        """An Http action's status, headers and body are its outputs and the run succeeds."""
        h.save({"A": http_action(f"{TARGET}/items", method="POST", body={"name": "x"})})
        h.sender.route(f"{TARGET}/items", respond(201, {"id": 7}, {"Location": f"{TARGET}/items/7"}))

        run = h.start()

        assert run.status == RunStatus.SUCCEEDED
        action = h.rendered(run.id)["actions"]["A"]
        assert action["status"] == "Succeeded"
        assert action["outputs"] == {"statusCode": 201, "headers": {"Location": f"{TARGET}/items/7"}, "body": {"id": 7}}
        assert action["inputs"]["body"] == {"name": "x"}
        (call,) = h.sender.requests
        assert (call.method, call.body) == ("POST", {"name": "x"})
        assert call.headers["x-ms-workflow-operation-name"] == "A"

    @pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
    def test_error_status_fails_the_action_and_the_run(self, h: Harness, status: int) -> None:
        """A 4xx or 5xx answer fails the action, and the unhandled failure fails the run."""
        h.save({"A": http_action()})
        h.sender.default = lambda _request: respond(status, {"error": "no"})

        run = h.start()

        assert run.status == RunStatus.FAILED
        stored = h.rendered(run.id)
        assert stored["error"]["code"] == "ActionFailed"
        assert "'A'" in stored["error"]["message"]
        assert stored["actions"]["A"]["status"] == "Failed"
        assert stored["actions"]["A"]["outputs"]["statusCode"] == status
        assert stored["endTime"] is not None

    def test_no_answer_fails_the_action_with_the_transport_code(self, h: Harness) -> None:
        """A call that gets no answer fails with the sender's error code."""
        h.save({"A": http_action()})

        def time_out(request: OutboundRequest) -> OutboundResponse:
            raise OutboundError("Timeout", "no answer within 120 seconds")

        h.sender.default = time_out

        run = h.start()

        assert run.status == RunStatus.FAILED
        assert h.rendered(run.id)["actions"]["A"]["error"]["code"] == "Timeout"

    def test_failure_handler_runs_and_the_run_succeeds(self, h: Harness) -> None:
        """An action with ``runAfter: Failed`` handles the failure: it runs and the run succeeds."""
        h.save(
            {
                "A": http_action(f"{TARGET}/a"),
                "OnSuccess": http_action(f"{TARGET}/ok", run_after={"A": ["Succeeded"]}),
                "OnFailure": http_action(f"{TARGET}/failed", run_after={"A": ["Failed"]}),
            }
        )
        h.sender.route(f"{TARGET}/a", respond(500))

        run = h.start()

        assert status_of(run) == {"A": "Failed", "OnSuccess": "Skipped", "OnFailure": "Succeeded"}
        assert run.status == RunStatus.SUCCEEDED
        assert run.error is None
        assert h.sender.to(f"{TARGET}/ok") == []
        assert len(h.sender.to(f"{TARGET}/failed")) == 1

    def test_skipped_branches_are_never_called(self, h: Harness) -> None:
        """A branch whose runAfter is not met is skipped, skips propagate, and ``Skipped`` can be waited on."""
        h.save(
            {
                "A": http_action(f"{TARGET}/a"),
                "OnFailure": http_action(f"{TARGET}/failed", run_after={"A": ["Failed"]}),
                "AfterFailure": http_action(f"{TARGET}/after", run_after={"OnFailure": ["Succeeded"]}),
                "Always": http_action(f"{TARGET}/always", run_after={"OnFailure": ["Succeeded", "Skipped"]}),
            }
        )

        run = h.start()

        assert status_of(run) == {
            "A": "Succeeded",
            "OnFailure": "Skipped",
            "AfterFailure": "Skipped",
            "Always": "Succeeded",
        }
        assert run.status == RunStatus.SUCCEEDED
        assert [r.url for r in h.sender.requests] == [f"{TARGET}/a", f"{TARGET}/always"]

    def test_expression_reads_a_previous_action_body(self, h: Harness) -> None:
        """``body('A')`` in a later action's uri and body sees A's response."""
        h.save(
            {
                "A": http_action(f"{TARGET}/a"),
                "B": http_action(
                    "@{body('A')['next']}",
                    method="POST",
                    body={"id": "@body('A').id", "label": "item @{body('A')?['id']}"},
                    run_after={"A": ["Succeeded"]},
                ),
            }
        )
        h.sender.route(f"{TARGET}/a", respond(200, {"id": 42, "next": f"{TARGET}/items/42"}))

        run = h.start()

        assert run.status == RunStatus.SUCCEEDED
        (call,) = h.sender.to(f"{TARGET}/items/42")
        assert call.body == {"id": 42, "label": "item 42"}

    def test_expression_reads_the_trigger_and_a_webhook_callback(self, h: Harness) -> None:
        """A later Http action sees both the trigger body and the webhook's callback body."""
        h.save(
            {
                "W": webhook_action(
                    subscribe_body={"callbackUrl": "@listCallbackUrl()", "order": "@triggerBody()?['order']"}
                ),
                "Notify": http_action(
                    f"{TARGET}/orders/@{{triggerBody()['order']}}/@{{body('W')['decision']}}",
                    method="POST",
                    run_after={"W": ["Succeeded"]},
                ),
            }
        )
        run = h.start({"order": 42})
        assert isinstance(h.subscribe_calls("W")[0].body, dict)
        assert h.subscribe_calls("W")[0].body["order"] == 42

        h.call_back(h.address(), {"decision": "approve"})

        assert h.stored(run.id).run.status == RunStatus.SUCCEEDED
        assert len(h.sender.to(f"{TARGET}/orders/42/approve")) == 1

    def test_expression_failure_at_run_time_fails_the_action(self, h: Harness) -> None:
        """An expression that cannot be evaluated fails its action with ``InvalidTemplate``."""
        h.save(
            {
                "A": http_action(f"{TARGET}/a"),
                "B": http_action("@{body('A')['missing']['deeper']}", run_after={"A": ["Succeeded"]}),
            }
        )
        h.sender.route(f"{TARGET}/a", respond(200, {"id": 1}))

        run = h.start()

        assert run.status == RunStatus.FAILED
        assert h.rendered(run.id)["actions"]["B"]["error"]["code"] == "InvalidTemplate"
        assert len(h.sender.requests) == 1


class TestParallelWebhooks:
    def definition_actions(self) -> dict[str, Any]:
        return {
            "A": webhook_action(subscribe_uri=f"{TARGET}/a/subscribe"),
            "B": webhook_action(subscribe_uri=f"{TARGET}/b/subscribe"),
            "Join": http_action(f"{TARGET}/join", run_after={"A": ["Succeeded"], "B": ["Succeeded"]}),
        }

    def test_both_branches_wait(self, h: Harness) -> None:
        """Two webhook branches with no order between them both subscribe and wait."""
        h.save(self.definition_actions())

        run = h.start()

        assert run.status == RunStatus.WAITING
        assert status_of(run) == {"A": "Waiting", "B": "Waiting", "Join": "Pending"}
        assert len(h.sender.to(f"{TARGET}/a/subscribe")) == 1
        assert len(h.sender.to(f"{TARGET}/b/subscribe")) == 1
        assert h.address("A").query["nonce"] != h.address("B").query["nonce"]

    @pytest.mark.parametrize("order", [("A", "B"), ("B", "A")])
    def test_resumed_in_either_order(self, h: Harness, order: tuple[str, str]) -> None:
        """Callbacks may come in any order; the join runs once, after both."""
        h.save(self.definition_actions())
        run = h.start()
        first, second = order

        after_first = h.call_back(h.address(first), {"from": first})

        assert after_first.status == RunStatus.WAITING
        assert after_first.actions[first].status == ActionStatus.SUCCEEDED
        assert after_first.actions[second].status == ActionStatus.WAITING
        assert h.sender.to(f"{TARGET}/join") == []

        after_second = h.call_back(h.address(second), {"from": second})

        assert after_second.status == RunStatus.SUCCEEDED
        stored = h.rendered(run.id)
        assert stored["actions"]["A"]["outputs"]["body"] == {"from": "A"}
        assert stored["actions"]["B"]["outputs"]["body"] == {"from": "B"}
        assert len(h.sender.to(f"{TARGET}/join")) == 1
        unsubscribed = [r.headers["x-ms-workflow-operation-name"] for r in h.sender.to(UNSUBSCRIBE_URI)]
        assert unsubscribed == [first, second]


class TestIdempotency:
    def test_same_key_returns_the_same_run(self, h: Harness) -> None:
        """Retrying a start with the same ``Idempotency-Key`` returns the first run and subscribes once."""
        h.save({"W": webhook_action()})

        first = h.start({"n": 1}, idempotency_key="order-42")
        second = h.start({"n": 1}, idempotency_key="order-42")

        assert second.id == first.id
        assert len(h.subscribe_calls()) == 1
        assert len(h.store.list_runs("wf", status=None, top=10, continuation=None)[0]) == 1

    def test_different_keys_start_different_runs(self, h: Harness) -> None:
        """Different keys are different requests."""
        h.save({"W": webhook_action()})

        first = h.start(idempotency_key="order-1")
        second = h.start(idempotency_key="order-2")

        assert first.id != second.id
        assert len(h.subscribe_calls()) == 2

    def test_key_is_scoped_to_its_workflow(self, h: Harness) -> None:
        """The same key used on two workflows starts a run in each."""
        h.save({"W": webhook_action()}, name="one")
        h.save({"W": webhook_action()}, name="two")

        first = h.start(idempotency_key="k", workflow="one")
        second = h.start(idempotency_key="k", workflow="two")

        assert first.id != second.id
        assert (first.workflow, second.workflow) == ("one", "two")


class TestStorageCost:
    @pytest.mark.parametrize(("cache", "expected"), [(timedelta(0), 7), (timedelta(minutes=1), 6)])
    def test_one_webhook_run_costs_six_transactions_or_seven_with_the_workflow_read(
        self, h: Harness, cache: timedelta, expected: int
    ) -> None:
        """A one-webhook run resumed within its lease: the workflow read (none when this
        process read it lately), alarm insert, write-ahead insert, subscribe record; run read,
        ended write, alarm delete."""
        h.engine.workflow_cache = cache
        h.save({"W": webhook_action()})
        h.start()  # a first start, as a busy workflow has had
        h.call_back(h.address())
        baseline = h.store.transactions

        run = h.start()
        latest = h.subscribe_calls()[-1].body
        assert isinstance(latest, dict)
        h.call_back(parse_callback_url(latest["callbackUrl"]))
        spent = h.store.transactions - baseline

        assert h.stored(run.id).run.status == RunStatus.SUCCEEDED
        assert spent == expected


class TestNoSecretsInHistory:
    def test_stored_inputs_show_the_callback_url_without_its_signature(self, h: Harness) -> None:
        """The subscribe inputs in history show the callback URL with ``sig=***``."""
        h.save({"W": webhook_action(subscribe_headers={"X-Callback": "@listCallbackUrl()"})})
        run = h.start()
        address = h.address()
        sig = address.query["sig"]

        stored = h.stored(run.id).run
        inputs = render_run(stored)["actions"]["W"]["inputs"]

        redacted = address.url.replace(f"sig={sig}", "sig=***")
        assert inputs["body"]["callbackUrl"] == redacted
        assert inputs["headers"]["X-Callback"] == redacted
        assert sig not in stored.model_dump_json()
        h.call_back(address)
        assert sig not in h.stored(run.id).run.model_dump_json()

    def test_authorization_header_is_redacted(self, h: Harness) -> None:
        """An ``Authorization`` header reaches the target but is shown as ``***`` in history."""
        h.save(
            {
                "W": webhook_action(subscribe_headers={"Authorization": "Bearer s3cret", "X-Plain": "visible"}),
                "H": http_action(headers={"authorization": "Bearer h-s3cret"}),
            }
        )

        run = h.start()

        assert h.subscribe_calls("W")[0].headers["Authorization"] == "Bearer s3cret"
        shown = h.rendered(run.id)
        assert shown["actions"]["W"]["inputs"]["headers"] == {"Authorization": "***", "X-Plain": "visible"}
        assert shown["actions"]["H"]["inputs"]["headers"] == {"authorization": "***"}
        assert "s3cret" not in json.dumps(shown)
        assert "s3cret" not in h.stored(run.id).run.model_dump_json()

    def test_basic_auth_password_is_redacted(self, h: Harness) -> None:
        """Basic credentials are sent to the target but history shows only the auth type."""
        h.save({"W": webhook_action(authentication={"type": "Basic", "username": "svc", "password": "pa55word"})})

        run = h.start()

        assert h.subscribe_calls("W")[0].headers["Authorization"].startswith("Basic ")
        shown = h.rendered(run.id)
        assert shown["actions"]["W"]["inputs"]["authentication"] == {"type": "Basic"}
        assert "pa55word" not in json.dumps(shown)
        assert "pa55word" not in h.stored(run.id).run.model_dump_json()

    def test_raw_auth_value_is_redacted(self, h: Harness) -> None:
        """A Raw authentication value is sent as the Authorization header but not kept."""
        h.save({"A": http_action(authentication={"type": "Raw", "value": "Token raw-s3cret"})})

        run = h.start()

        assert h.sender.requests[0].headers["Authorization"] == "Token raw-s3cret"
        assert "raw-s3cret" not in json.dumps(h.rendered(run.id))

    def test_inbound_credentials_are_redacted(self, h: Harness) -> None:
        """Credentials on the trigger request and on the callback are not kept in outputs."""
        h.save({"W": webhook_action()})
        run = h.start(headers={"Authorization": "Bearer trigger-s3cret"})

        h.call_back(h.address(), headers={"X-Hub-Signature-256": "sha256=cb-s3cret", "Cookie": "session=c00kie"})

        shown = h.rendered(run.id)
        assert shown["trigger"]["outputs"]["headers"]["Authorization"] == "***"
        assert shown["actions"]["W"]["outputs"]["headers"]["X-Hub-Signature-256"] == "***"
        assert shown["actions"]["W"]["outputs"]["headers"]["Cookie"] == "***"
        text = json.dumps(shown)
        assert "s3cret" not in text
        assert "c00kie" not in text
