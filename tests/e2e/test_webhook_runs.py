"""End to end: the dev host over real HTTP, Azurite for storage, a real loopback target."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import requests

from tests.conftest import DevHostProcess
from tests.support.target import NO_RETRY, WebhookTarget, webhook_definition

pytestmark = pytest.mark.e2e


def _name() -> str:
    return "wf-" + secrets.token_hex(4)


def _register(devhost: DevHostProcess, body: dict[str, Any]) -> str:
    name = _name()
    answer = requests.put(f"{devhost.api}/workflows/{name}", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return name


def _start(devhost: DevHostProcess, name: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{devhost.api}/workflows/{name}/runs", json=body, headers=headers, timeout=30)


def _run(devhost: DevHostProcess, run_id: str) -> requests.Response:
    return requests.get(f"{devhost.api}/runs/{run_id}", timeout=30)


def _wait_until_ended(devhost: DevHostProcess, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = _run(devhost, run_id)
        if answer.status_code == 200:
            body: dict[str, Any] = answer.json()
            return body
        assert answer.status_code == 202, answer.text
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


class TestWebhookAction:
    def test_a_run_waits_for_its_callback_and_then_succeeds(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """A run suspends on the webhook action, and the target's callback resumes it to Succeeded."""
        name = _register(devhost, webhook_definition(target))
        started = _start(devhost, name, {"order": 42})
        assert started.status_code == 202
        run_id = started.json()["id"]
        assert started.headers["Location"] == f"/api/runs/{run_id}"
        assert int(started.headers["Retry-After"]) > 0

        waiting = _run(devhost, run_id)
        assert waiting.status_code == 202
        assert waiting.headers["Location"] == f"/api/runs/{run_id}"
        assert waiting.json()["status"] == "Waiting"
        assert waiting.json()["actions"]["Wait_for_approval"]["status"] == "Waiting"

        [subscribe] = target.calls("/subscribe")
        assert subscribe.body["order"] == 42
        assert subscribe.headers["x-ms-workflow-name"] == name
        assert subscribe.headers["x-ms-workflow-run-id"] == run_id
        assert subscribe.headers["x-ms-workflow-operation-name"] == "Wait_for_approval"
        assert subscribe.headers["User-Agent"].startswith("hookflow/")

        resumed = target.call_back({"approved": True}, headers={"X-Approver": "ada"})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "Succeeded"

        ended = _run(devhost, run_id)
        assert ended.status_code == 200
        action = ended.json()["actions"]["Wait_for_approval"]
        assert action["status"] == "Succeeded"
        assert action["outputs"]["body"] == {"approved": True}
        headers = {k.lower(): v for k, v in action["outputs"]["headers"].items()}
        assert headers["x-approver"] == "ada"
        assert action["outputs"]["statusCode"] == 200
        [unsubscribe] = target.calls("/unsubscribe")
        assert unsubscribe.body["callbackUrl"] == subscribe.body["callbackUrl"]

    def test_a_callback_from_inside_subscribe_resumes_the_run(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """A target that calls back before its subscribe call returns still gets the run to Succeeded."""
        target.mode = "inside"
        name = _register(devhost, webhook_definition(target, then_http=True))
        run_id = _start(devhost, name, {"order": 7}).json()["id"]

        run = _wait_until_ended(devhost, run_id)
        assert run["status"] == "Succeeded"
        assert target.inside_answers == [200]
        assert run["actions"]["Wait_for_approval"]["outputs"]["body"] == {"approved": True}
        assert len(target.calls("/subscribe")) == 1
        assert len(target.calls("/unsubscribe")) == 1
        [notify] = target.calls("/notify")
        assert notify.body == {"approved": True}

    def test_a_second_callback_is_refused_with_409_and_changes_nothing(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """Only the first callback resumes a wait; a repeat answers 409 and leaves the run as it was."""
        name = _register(devhost, webhook_definition(target))
        run_id = _start(devhost, name, {}).json()["id"]
        assert target.call_back({"first": True}).status_code == 200
        before = _run(devhost, run_id).json()

        again = target.call_back({"second": True})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "AlreadyResumed"
        assert _run(devhost, run_id).json() == before
        assert len(target.calls("/unsubscribe")) == 1

    def test_a_bad_or_missing_signature_is_refused_with_401(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """A callback URL whose signature was altered or removed answers 401 and the run keeps waiting."""
        name = _register(devhost, webhook_definition(target))
        run_id = _start(devhost, name, {}).json()["id"]
        url = target.callback_urls[0]
        head, _, signature = url.rpartition("sig=")
        tampered = head + "sig=" + ("A" if signature[0] != "A" else "B") + signature[1:]
        unsigned = head.rstrip("&")

        for bad in (tampered, unsigned):
            answer = requests.post(bad, json={"approved": True}, timeout=30)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] in ("InvalidSignature", "MissingSignature")
        assert _run(devhost, run_id).json()["status"] == "Waiting"
        assert target.calls("/unsubscribe") == []

    def test_a_body_over_the_limit_is_refused_with_413(self, devhost: DevHostProcess, target: WebhookTarget) -> None:
        """A callback body over HOOKFLOW_MAX_BODY_BYTES answers 413 and the run keeps waiting."""
        name = _register(devhost, webhook_definition(target))
        run_id = _start(devhost, name, {}).json()["id"]

        answer = requests.post(
            target.callback_urls[0], data=b"x" * 65537, headers={"Content-Type": "text/plain"}, timeout=30
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "PayloadTooLarge"
        assert _run(devhost, run_id).json()["status"] == "Waiting"
        assert target.call_back({"ok": True}).status_code == 200

    def test_a_failed_subscribe_fails_the_run_and_voids_the_url(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """When subscribe answers 500 the action and run fail, and its callback URL answers 410."""
        target.subscribe_status = 500
        name = _register(devhost, webhook_definition(target, subscribe_retry=NO_RETRY))
        started = _start(devhost, name, {})
        run = _wait_until_ended(devhost, started.json()["id"])
        assert run["status"] == "Failed"
        assert run["actions"]["Wait_for_approval"]["error"]["code"] == "SubscribeFailed"
        assert target.call_back({"late": True}).status_code == 410
        assert target.calls("/unsubscribe") == []


class TestRunsApi:
    def test_the_same_idempotency_key_returns_the_same_run(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """Repeating a start with the same Idempotency-Key returns the first run and subscribes once."""
        name = _register(devhost, webhook_definition(target))
        first = _start(devhost, name, {}, headers={"Idempotency-Key": "order-1"})
        second = _start(devhost, name, {}, headers={"Idempotency-Key": "order-1"})
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert len(target.calls("/subscribe")) == 1

    def test_an_unknown_run_answers_404_json(self, devhost: DevHostProcess) -> None:
        """Reading a run that does not exist answers 404 with a JSON error."""
        answer = _run(devhost, "0" * 29)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "RunNotFound"

    def test_starting_an_unknown_workflow_answers_404(self, devhost: DevHostProcess) -> None:
        """Starting a run of a workflow that was never saved answers 404 and creates nothing."""
        answer = _start(devhost, _name(), {})
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "WorkflowNotFound"

    def test_a_trigger_body_that_is_not_json_is_refused(self, devhost: DevHostProcess, target: WebhookTarget) -> None:
        """A start whose body claims JSON but is not answers 400 and starts nothing."""
        name = _register(devhost, webhook_definition(target))
        answer = requests.post(
            f"{devhost.api}/workflows/{name}/runs",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "InvalidJson"
        assert target.calls("/subscribe") == []


class TestWorkflowsApi:
    def test_an_invalid_definition_is_refused_with_every_problem_and_not_stored(self, devhost: DevHostProcess) -> None:
        """A definition with several problems answers 400 listing each JSON path, and nothing is saved."""
        name = _name()
        body = {
            "definition": {
                "triggers": {"manual": {"type": "Request"}},
                "actions": {
                    "A": {"type": "Http", "inputs": {"method": "POST", "uri": "@nope()"}},
                    "B": {
                        "type": "Http",
                        "runAfter": {"Missing": ["Succeeded"]},
                        "inputs": {"method": "GET", "uri": "x"},
                    },
                },
            }
        }
        answer = requests.put(f"{devhost.api}/workflows/{name}", json=body, timeout=30)
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "InvalidDefinition"
        paths = {d["path"] for d in error["details"]}
        assert "$.definition.actions.A.inputs.uri" in paths
        assert "$.definition.actions.B.runAfter.Missing" in paths
        assert requests.get(f"{devhost.api}/workflows/{name}", timeout=30).status_code == 404

    def test_a_workflow_is_created_read_replaced_listed_and_deleted(
        self, devhost: DevHostProcess, target: WebhookTarget
    ) -> None:
        """PUT answers 201 then 200, GET and the list show it, DELETE answers 204 and it is gone."""
        name = _name()
        body = webhook_definition(target)
        assert requests.put(f"{devhost.api}/workflows/{name}", json=body, timeout=30).status_code == 201
        replaced = requests.put(f"{devhost.api}/workflows/{name}", json=body, timeout=30)
        assert replaced.status_code == 200
        assert replaced.json()["version"] == 2
        shown = requests.get(f"{devhost.api}/workflows/{name}", timeout=30).json()
        assert shown["state"] == "Enabled"
        assert "Wait_for_approval" in shown["definition"]["actions"]
        listed = requests.get(f"{devhost.api}/workflows", timeout=30).json()["value"]
        assert name in {w["name"] for w in listed}
        assert requests.delete(f"{devhost.api}/workflows/{name}", timeout=30).status_code == 204
        assert requests.get(f"{devhost.api}/workflows/{name}", timeout=30).status_code == 404

    def test_a_body_that_is_not_json_answers_400(self, devhost: DevHostProcess) -> None:
        """A PUT whose body is not JSON answers 400 with a JSON error."""
        answer = requests.put(f"{devhost.api}/workflows/{_name()}", data=b"nope", timeout=30)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "InvalidJson"


class TestHealth:
    def test_health_answers_200_when_storage_answers(self, devhost: DevHostProcess) -> None:
        """The health endpoint reads storage and answers 200."""
        answer = requests.get(f"{devhost.api}/health", timeout=30)
        assert answer.status_code == 200
        assert answer.json()["status"] == "Healthy"
