"""End to end: what the timer does, fired through the dev host's admin endpoint.

Deadlines here are a few seconds long; tests fire the sweep repeatedly until what they expect
has happened, within a bound, rather than sleeping a fixed time and hoping.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.conftest import DevHostProcess
from tests.support.client import get_run as _run
from tests.support.client import sweep_until as _sweep_until
from tests.support.target import NO_RETRY, Answer, ScriptedApi, WebhookTarget, webhook_definition

pytestmark = pytest.mark.e2e


def _register(devhost: DevHostProcess, body: dict[str, Any]) -> str:
    name = "wf-" + secrets.token_hex(4)
    answer = requests.put(f"{devhost.api}/workflows/{name}", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return name


def _start(devhost: DevHostProcess, name: str, body: Any = None) -> dict[str, Any]:
    answer = requests.post(f"{devhost.api}/workflows/{name}/runs", json=body or {}, timeout=30)
    assert answer.status_code == 202, answer.text
    run: dict[str, Any] = answer.json()
    return run


def _ended(devhost: DevHostProcess, run_id: str) -> Callable[[], bool]:
    return lambda: _run(devhost, run_id)["status"] not in ("Running", "Waiting")


def _http_definition(api: ScriptedApi, path: str, **action: Any) -> dict[str, Any]:
    inputs = {"method": "POST", "uri": f"{api.base_url}{path}", "body": {"job": 1}, **action.pop("inputs", {})}
    return {
        "definition": {
            "triggers": {"manual": {"type": "Request"}},
            "actions": {"Call": {"type": "Http", "inputs": inputs, **action}},
        }
    }


class TestTimeouts:
    def test_a_timed_out_wait_unsubscribes_voids_its_url_and_follows_run_after(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """When limit.timeout lapses the action is TimedOut, unsubscribed, its URL answers 410,
        and the action that runs after TimedOut runs."""
        body = webhook_definition(target, limit={"timeout": "PT2S"}, after_timeout=True)
        run_id = _start(devhost, _register(devhost, body))["id"]

        _sweep_until(devhost, _ended(devhost, run_id))

        run = _run(devhost, run_id)
        assert run["status"] == "Succeeded"  # the timeout was handled by On_timeout
        assert run["actions"]["Wait_for_approval"]["status"] == "TimedOut"
        assert run["actions"]["Wait_for_approval"]["error"]["code"] == "ActionTimedOut"
        assert run["actions"]["On_timeout"]["status"] == "Succeeded"
        assert len(target.calls("/timed-out")) == 1
        assert len(target.calls("/unsubscribe")) == 1
        late = target.call_back({"approved": True})
        assert late.status_code == 410
        assert _run(devhost, run_id) == run

    def test_an_unhandled_timeout_fails_the_run_with_action_timed_out(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """Without an action after TimedOut, a lapsed timeout fails the run with ActionTimedOut."""
        run_id = _start(devhost, _register(devhost, webhook_definition(target, limit={"timeout": "PT1S"})))["id"]

        _sweep_until(devhost, _ended(devhost, run_id))

        run = _run(devhost, run_id)
        assert run["status"] == "Failed"
        assert run["error"]["code"] == "ActionTimedOut"


class TestCancel:
    def test_cancel_ends_the_run_unsubscribes_and_voids_the_url(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """Cancelling a waiting run ends it Cancelled, unsubscribes once, and its callback URL answers 410."""
        run_id = _start(devhost, _register(devhost, webhook_definition(target)))["id"]

        cancelled = requests.post(f"{devhost.api}/runs/{run_id}/cancel", timeout=30)

        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "Cancelled"
        assert cancelled.json()["actions"]["Wait_for_approval"]["status"] == "Cancelled"
        assert len(target.calls("/unsubscribe")) == 1
        assert target.call_back({"approved": True}).status_code == 410
        again = requests.post(f"{devhost.api}/runs/{run_id}/cancel", timeout=30)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "RunEnded"
        assert requests.get(f"{devhost.api}/runs/{run_id}", timeout=30).status_code == 200

    def test_cancelling_an_unknown_run_answers_404(self, devhost: DevHostProcess) -> None:
        """Cancelling a run that does not exist answers 404."""
        answer = requests.post(f"{devhost.api}/runs/{'1' * 29}/cancel", timeout=30)
        assert answer.status_code == 404


class TestAsyncPolling:
    def test_a_202_is_polled_at_its_location_until_the_result(self, devhost: DevHostProcess, api: ScriptedApi) -> None:
        """A 202 with Location and Retry-After is polled, with the action's authentication, until a 200."""
        api.script["/start"] = [Answer(202, {"state": "accepted"}, {"Location": "/status/7", "Retry-After": "1"})]
        api.script["/status/7"] = [
            Answer(202, {"state": "running"}, {"Location": "/status/7", "Retry-After": "1"}),
            Answer(202, {"state": "running"}, {"Retry-After": "1"}),
            Answer(200, {"state": "done", "result": 42}),
        ]
        auth = {"type": "Basic", "username": "ada", "password": "s3cret"}
        name = _register(devhost, _http_definition(api, "/start", inputs={"authentication": auth}))
        run = _start(devhost, name)
        assert run["actions"]["Call"]["status"] == "Waiting"

        _sweep_until(devhost, _ended(devhost, run["id"]))

        ended = _run(devhost, run["id"])
        assert ended["status"] == "Succeeded"
        assert ended["actions"]["Call"]["outputs"]["statusCode"] == 200
        assert ended["actions"]["Call"]["outputs"]["body"] == {"state": "done", "result": 42}
        polls = api.calls("/status/7")
        assert len(polls) == 3
        assert all(p.method == "GET" for p in polls)
        assert all(p.headers.get("Authorization", "").startswith("Basic ") for p in polls)
        assert "s3cret" not in str(ended)

    def test_disable_async_pattern_makes_the_202_the_result(self, devhost: DevHostProcess, api: ScriptedApi) -> None:
        """With operationOptions DisableAsyncPattern a 202 ends the action at once, and nothing is polled."""
        api.script["/start"] = [Answer(202, {"state": "accepted"}, {"Location": "/status/8"})]
        name = _register(devhost, _http_definition(api, "/start", operationOptions="DisableAsyncPattern"))

        run = _start(devhost, name)

        assert run["status"] == "Succeeded"
        assert run["actions"]["Call"]["outputs"]["statusCode"] == 202
        assert api.calls("/status/8") == []


class TestRetries:
    def test_a_target_failing_twice_with_503_is_retried_until_it_succeeds(
        self, devhost: DevHostProcess, api: ScriptedApi
    ) -> None:
        """A fixed retry policy retries 503s through the timer; the third attempt succeeds and is recorded."""
        api.script["/flaky"] = [Answer(503, {"busy": True}), Answer(503, {"busy": True}), Answer(200, {"ok": True})]
        policy = {"type": "fixed", "count": 3, "interval": "PT1S"}
        name = _register(devhost, _http_definition(api, "/flaky", inputs={"retryPolicy": policy}))
        run = _start(devhost, name)
        assert run["status"] == "Running"
        assert run["actions"]["Call"]["next"]["step"] == "retry"

        _sweep_until(devhost, _ended(devhost, run["id"]))

        ended = _run(devhost, run["id"])
        assert ended["status"] == "Succeeded"
        assert ended["actions"]["Call"]["attempts"] == 3
        assert ended["actions"]["Call"]["outputs"]["body"] == {"ok": True}
        assert len(api.calls("/flaky")) == 3


class TestCallbackOutcomes:
    def test_a_failure_callback_fails_the_action_with_its_body(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """A callback with x-hookflow-outcome: failed fails the action, its body becoming the error."""
        run_id = _start(devhost, _register(devhost, webhook_definition(target)))["id"]

        answer = target.call_back({"reason": "rejected by ada"}, headers={"x-hookflow-outcome": "failed"})

        assert answer.status_code == 200
        run = _run(devhost, run_id)
        assert run["status"] == "Failed"
        action = run["actions"]["Wait_for_approval"]
        assert action["status"] == "Failed"
        assert action["error"]["code"] == "CallbackFailed"
        assert "rejected by ada" in action["error"]["message"]
        assert len(target.calls("/unsubscribe")) == 1

    def test_a_heartbeat_keeps_a_short_timeout_from_firing(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """A heartbeat pushes the timeout out by limit.heartbeat: past the original timeout the wait goes on."""
        body = webhook_definition(target, limit={"timeout": "PT2S", "heartbeat": "PT60S"}, subscribe_retry=NO_RETRY)
        run_id = _start(devhost, _register(devhost, body))["id"]
        started = time.monotonic()

        beat = target.call_back({}, headers={"x-hookflow-heartbeat": "true"})
        assert beat.status_code == 200
        assert beat.json()["status"] == "Waiting"
        while time.monotonic() - started < 3:  # past the original 2-second timeout
            devhost.fire()
            time.sleep(0.3)

        assert _run(devhost, run_id)["actions"]["Wait_for_approval"]["status"] == "Waiting"
        assert target.calls("/unsubscribe") == []
        assert target.call_back({"approved": True}).status_code == 200
        assert _run(devhost, run_id)["status"] == "Succeeded"
