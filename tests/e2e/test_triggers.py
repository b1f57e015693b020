"""End to end: triggers start runs, with the lifecycle of Logic Apps triggers.

Loopback services behave like the Logic Apps documentation's samples: a webhook-trigger
source that stores callback URLs on subscribe, removes them on unsubscribe and POSTs events
to every stored URL; a polling source that hands out a ``triggerState`` cursor in
``Location`` and answers one item per ``200`` with ``retry-after: 0`` while more are waiting.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests

from shared.receivers import sign_github
from tests.conftest import GITHUB_SECRET, GITHUB_SECRET_SETTING, DevHostProcess
from tests.support.client import get_run as _run
from tests.support.client import list_runs as _runs
from tests.support.client import sweep_until as _sweep_until
from tests.support.target import PollingSource, TriggerSource, WebhookTarget

pytestmark = pytest.mark.e2e


def _name() -> str:
    return "wf-" + secrets.token_hex(4)


def _put(devhost: DevHostProcess, name: str, body: dict[str, Any]) -> requests.Response:
    return requests.put(f"{devhost.api}/workflows/{name}", json=body, timeout=30)


def _workflow(devhost: DevHostProcess, name: str) -> dict[str, Any]:
    shown: dict[str, Any] = requests.get(f"{devhost.api}/workflows/{name}", timeout=30).json()
    return shown


def _webhook_trigger(source: TriggerSource, *, version: int = 1) -> dict[str, Any]:
    return {
        "definition": {
            "triggers": {
                "on_event": {
                    "type": "HttpWebhook",
                    "inputs": {
                        "subscribe": {
                            "method": "POST",
                            "uri": f"{source.base_url}/subscribe",
                            "body": "@{listCallbackUrl()}",
                            "retryPolicy": {"type": "none"},
                        },
                        "unsubscribe": {
                            "method": "POST",
                            "uri": f"{source.base_url}/unsubscribe",
                            "body": "@{listCallbackUrl()}",
                        },
                    },
                }
            },
            "actions": {},
            "contentVersion": f"1.0.0.{version}",
        }
    }


class TestWebhookTrigger:
    def test_saving_subscribes_and_every_event_starts_a_run_in_order(
        self, devhost: DevHostProcess, source: TriggerSource
    ) -> None:
        """Saving an enabled workflow subscribes once; each event POSTed to the URL starts one run."""
        name = _name()
        assert _put(devhost, name, _webhook_trigger(source)).status_code == 201
        assert len(source.calls("/subscribe")) == 1
        shown = _workflow(devhost, name)["trigger"]
        assert shown["status"] == "Subscribed"
        assert source.urls == [shown["callbackUrl"]]

        answers = [source.fire({"n": n})[0] for n in range(3)]

        assert [a.status_code for a in answers] == [202, 202, 202]
        run_ids = [a.json()["id"] for a in answers]
        assert all(a.headers["Location"] == f"/api/runs/{i}" for a, i in zip(answers, run_ids, strict=True))
        assert len(set(run_ids)) == 3
        bodies = [_run(devhost, i)["trigger"]["outputs"]["body"] for i in run_ids]
        assert bodies == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert [r["id"] for r in _runs(devhost, name)] == list(reversed(run_ids))

    def test_disable_unsubscribes_and_enable_subscribes_anew(
        self, devhost: DevHostProcess, source: TriggerSource
    ) -> None:
        """Disabling unsubscribes with the same URL and voids it (410); enabling subscribes a new URL."""
        name = _name()
        _put(devhost, name, _webhook_trigger(source))
        first = source.urls[0]

        disabled = requests.post(f"{devhost.api}/workflows/{name}/disable", timeout=30)
        assert disabled.status_code == 200
        assert disabled.json()["state"] == "Disabled"
        assert [c.body for c in source.calls("/unsubscribe")] == [first]
        assert source.urls == []
        assert requests.post(first, json={"late": True}, timeout=30).status_code == 410

        enabled = requests.post(f"{devhost.api}/workflows/{name}/enable", timeout=30)
        assert enabled.status_code == 200
        assert len(source.calls("/subscribe")) == 2
        assert source.urls
        assert source.urls[0] != first
        assert [a.status_code for a in source.fire({"again": True})] == [202]
        assert requests.post(first, json={"stale": True}, timeout=30).status_code == 410

    def test_replacing_the_definition_unsubscribes_first_then_subscribes(
        self, devhost: DevHostProcess, source: TriggerSource
    ) -> None:
        """A PUT that replaces the definition unsubscribes the old URL before subscribing the new one."""
        name = _name()
        _put(devhost, name, _webhook_trigger(source))
        first = source.urls[0]

        assert _put(devhost, name, _webhook_trigger(source, version=2)).status_code == 200

        paths = [r.path for r in source.requests]
        assert paths == ["/subscribe", "/unsubscribe", "/subscribe"]
        assert source.calls("/unsubscribe")[0].body == first
        assert len(source.urls) == 1
        assert source.urls[0] != first

    def test_delete_unsubscribes_and_the_url_then_answers_404(
        self, devhost: DevHostProcess, source: TriggerSource
    ) -> None:
        """Deleting the workflow unsubscribes; a POST to its old URL starts nothing and answers 404."""
        name = _name()
        _put(devhost, name, _webhook_trigger(source))
        url = source.urls[0]

        assert requests.delete(f"{devhost.api}/workflows/{name}", timeout=30).status_code == 204

        assert len(source.calls("/unsubscribe")) == 1
        assert requests.post(url, json={}, timeout=30).status_code == 404

    def test_a_failed_subscribe_is_visible_and_retried_by_the_timer(
        self, devhost: DevHostProcess, source: TriggerSource
    ) -> None:
        """A subscribe answering 500 leaves the workflow saved with the trigger Failed; the timer retries."""
        source.subscribe_status = 500
        name = _name()
        assert _put(devhost, name, _webhook_trigger(source)).status_code == 201
        trigger = _workflow(devhost, name)["trigger"]
        assert trigger["status"] == "Failed"
        assert trigger["lastError"]["code"] == "UnexpectedStatusCode"
        assert trigger["nextTime"] is not None

        source.subscribe_status = 200
        _sweep_until(devhost, lambda: _workflow(devhost, name)["trigger"]["status"] == "Subscribed", timeout=60)
        assert len(source.urls) == 1


class TestPollingTrigger:
    def test_each_waiting_item_starts_one_run_in_order(
        self, devhost: DevHostProcess, polling_source: PollingSource
    ) -> None:
        """The timer polls with the cursor from Location; each 200 starts a run, in order, none twice."""
        polling_source.items = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
        name = _name()
        body = {
            "definition": {
                "triggers": {
                    "poll": {
                        "type": "Http",
                        "inputs": {"method": "GET", "uri": f"{polling_source.base_url}/poll"},
                        "recurrence": {"frequency": "Second", "interval": 1},
                    }
                },
                "actions": {},
            }
        }
        assert _put(devhost, name, body).status_code == 201

        _sweep_until(devhost, lambda: len(_runs(devhost, name)) >= 3)
        # Then the source has nothing more: the next poll, with the last cursor, starts nothing.
        _sweep_until(devhost, lambda: any("triggerState=3" in p for p in polling_source.requests))
        devhost.fire()

        runs = list(reversed(_runs(devhost, name)))
        assert [_run(devhost, r["id"])["trigger"]["outputs"]["body"] for r in runs] == [
            {"id": "a"},
            {"id": "b"},
            {"id": "c"},
        ]
        assert polling_source.requests[0] == "/poll"
        assert len(_runs(devhost, name)) == 3
        trigger = _workflow(devhost, name)["trigger"]
        assert trigger["status"] == "Polling"
        assert trigger["lastPollTime"] is not None


class TestRequestTrigger:
    def test_the_signed_invoke_url_starts_a_run_without_a_key(self, devhost: DevHostProcess) -> None:
        """GET on the workflow shows a signed URL; a POST to it starts a run; a tampered one answers 401."""
        name = _name()
        _put(devhost, name, {"definition": {"triggers": {"manual": {"type": "Request"}}, "actions": {}}})
        url = _workflow(devhost, name)["trigger"]["callbackUrl"]

        started = requests.post(url, json={"hello": "world"}, timeout=30)

        assert started.status_code == 202
        run = _run(devhost, started.json()["id"])
        assert run["trigger"]["outputs"]["body"] == {"hello": "world"}
        tampered = url.replace("sig=", "sig=x")
        assert requests.post(tampered, json={}, timeout=30).status_code == 401
        assert len(_runs(devhost, name)) == 1


class TestSignedInboundWebhooks:
    def _github_workflow(self, devhost: DevHostProcess) -> str:
        name = _name()
        trigger = {"type": "Request", "signature": {"scheme": "github", "secretSetting": GITHUB_SECRET_SETTING}}
        _put(devhost, name, {"definition": {"triggers": {"manual": trigger}, "actions": {}}})
        url: str = _workflow(devhost, name)["trigger"]["callbackUrl"]
        return url

    def test_a_github_signed_delivery_starts_one_run_and_a_redelivery_none(self, devhost: DevHostProcess) -> None:
        """A delivery signed like GitHub's starts a run; the same X-GitHub-Delivery again returns the first run."""
        url = self._github_workflow(devhost)
        body = b'{"action": "opened"}'
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET.encode(), body),
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        }

        first = requests.post(url, data=body, headers=headers, timeout=30)
        again = requests.post(url, data=body, headers=headers, timeout=30)

        assert first.status_code == again.status_code == 202
        assert first.headers["Location"] == again.headers["Location"]

    def test_a_bad_signature_answers_401_and_starts_nothing(self, devhost: DevHostProcess) -> None:
        """A delivery whose body does not match its signature answers 401 and starts no run."""
        url = self._github_workflow(devhost)
        name = url.split("/workflows/")[1].split("/")[0]
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET.encode(), b'{"action": "opened"}'),
        }

        answer = requests.post(url, data=b'{"action": "deleted"}', headers=headers, timeout=30)

        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "InvalidSignature"
        assert _runs(devhost, name) == []


class TestConcurrencyLimit:
    def test_a_full_limit_answers_429_until_a_run_ends(self, devhost: DevHostProcess, target: WebhookTarget) -> None:
        """With concurrency.runs 1, a second trigger call while a run waits gets 429; after it ends, 202."""
        name = _name()
        trigger = {"type": "Request", "runtimeConfiguration": {"concurrency": {"runs": 1}}}
        action = {
            "type": "HttpWebhook",
            "inputs": {
                "subscribe": {
                    "method": "POST",
                    "uri": f"{target.base_url}/subscribe",
                    "body": {"callbackUrl": "@{listCallbackUrl()}"},
                }
            },
        }
        _put(devhost, name, {"definition": {"triggers": {"manual": trigger}, "actions": {"Wait": action}}})
        url = _workflow(devhost, name)["trigger"]["callbackUrl"]

        assert requests.post(url, json={}, timeout=30).status_code == 202
        busy = requests.post(url, json={}, timeout=30)
        assert busy.status_code == 429
        assert int(busy.headers["Retry-After"]) > 0
        assert len(_runs(devhost, name)) == 1

        assert target.call_back({"done": True}).status_code == 200
        assert requests.post(url, json={}, timeout=30).status_code == 202
