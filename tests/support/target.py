"""A real HTTP service on loopback that behaves like a webhook target.

It implements ``subscribe`` and ``unsubscribe`` the way the Logic Apps sample webhook
controllers do (the callback URL arrives in the JSON body under ``callbackUrl``), records
every request, and calls back in one of two ways:

* ``later``: keeps the callback URL; the test calls :meth:`WebhookTarget.call_back` when it wants;
* ``inside``: POSTs to the callback URL from inside the subscribe handler, before answering
  the subscribe request (the race the engine must survive).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import requests
from requests import Response


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class _Handler(BaseHTTPRequestHandler):
    """A quiet loopback handler with one way to answer."""

    disable_nagle_algorithm = True

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class _Loopback:
    """A threaded HTTP server on 127.0.0.1 (a free port), started and stopped by its test."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


@dataclass
class WebhookTarget(_Loopback):
    mode: Literal["later", "inside"] = "later"
    subscribe_status: int = 200
    unsubscribe_status: int = 200
    inside_body: dict[str, Any] = field(default_factory=lambda: {"approved": True})
    requests: list[Recorded] = field(default_factory=list)
    callback_urls: list[str] = field(default_factory=list)
    inside_answers: list[int] = field(default_factory=list)

    def calls(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def call_back(self, body: Any, *, index: int = -1, headers: dict[str, str] | None = None) -> Response:
        """POST ``body`` to a stored callback URL, as the service would when its event happens."""
        return requests.post(self.callback_urls[index], json=body, headers=headers, timeout=30)

    def start(self) -> WebhookTarget:
        target = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with target._lock:
                    target.requests.append(Recorded("POST", self.path, dict(self.headers), body))
                status = 200
                if self.path == "/subscribe":
                    status = target.subscribe_status
                    url = body.get("callbackUrl") if isinstance(body, dict) else None
                    if url:
                        with target._lock:
                            target.callback_urls.append(url)
                        if target.mode == "inside" and status < 400:
                            answer = requests.post(url, json=target.inside_body, timeout=30)
                            target.inside_answers.append(answer.status_code)
                elif self.path == "/unsubscribe":
                    status = target.unsubscribe_status
                self.reply(status, {"ok": status < 400})

        self._serve(Handler, "webhook-target")
        return self


NO_RETRY: dict[str, Any] = {"type": "none"}


def webhook_definition(
    target: WebhookTarget,
    *,
    then_http: bool = False,
    subscribe_retry: dict[str, Any] | None = None,
    unsubscribe_retry: dict[str, Any] | None = None,
    limit: dict[str, str] | None = None,
    after_timeout: bool = False,
) -> dict[str, Any]:
    """A workflow: a Request trigger, one webhook action, optionally an Http action after it.

    ``after_timeout`` adds an Http action that runs only when the webhook action times out.
    """
    subscribe: dict[str, Any] = {
        "method": "POST",
        "uri": f"{target.base_url}/subscribe",
        "body": {"callbackUrl": "@{listCallbackUrl()}", "order": "@triggerBody()?['order']"},
    }
    unsubscribe: dict[str, Any] = {
        "method": "POST",
        "uri": f"{target.base_url}/unsubscribe",
        "body": {"callbackUrl": "@{listCallbackUrl()}"},
    }
    if subscribe_retry is not None:
        subscribe["retryPolicy"] = subscribe_retry
    if unsubscribe_retry is not None:
        unsubscribe["retryPolicy"] = unsubscribe_retry
    webhook: dict[str, Any] = {
        "type": "HttpWebhook",
        "inputs": {"subscribe": subscribe, "unsubscribe": unsubscribe},
    }
    if limit is not None:
        webhook["limit"] = limit
    actions: dict[str, Any] = {"Wait_for_approval": webhook}
    if after_timeout:
        actions["On_timeout"] = {
            "type": "Http",
            "runAfter": {"Wait_for_approval": ["TimedOut"]},
            "inputs": {"method": "POST", "uri": f"{target.base_url}/timed-out", "body": {"late": True}},
        }
    if then_http:
        actions["Notify"] = {
            "type": "Http",
            "runAfter": {"Wait_for_approval": ["Succeeded"]},
            "inputs": {"method": "POST", "uri": f"{target.base_url}/notify", "body": "@body('Wait_for_approval')"},
        }
    return {"definition": {"triggers": {"manual": {"type": "Request", "kind": "Http"}}, "actions": actions}}


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ScriptedApi(_Loopback):
    """A loopback API that answers each path from a script, in order (the last answer repeats)."""

    script: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _served: dict[str, int] = field(default_factory=dict)

    def calls(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> ScriptedApi:
        api = self

        class Handler(_Handler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with api._lock:
                    api.requests.append(Recorded(self.command, self.path, dict(self.headers), raw.decode() or None))
                    answers = api.script.get(self.path) or [Answer(404, {"error": "no script"})]
                    index = api._served.get(self.path, 0)
                    api._served[self.path] = index + 1
                    answer = answers[min(index, len(answers) - 1)]
                self.reply(answer.status, answer.body, answer.headers)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self._serve(Handler, "scripted-api")
        return self


@dataclass
class TriggerSource(_Loopback):
    """A webhook-trigger source like the Logic Apps sample controller: ``/subscribe`` stores the
    callback URL sent as a JSON string, ``/unsubscribe`` removes it, and :meth:`fire` POSTs an
    event to every stored URL. ``subscribe_status`` makes subscribe fail on purpose."""

    subscribe_status: int = 200
    urls: list[str] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)

    def calls(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def fire(self, event: Any, headers: dict[str, str] | None = None) -> list[Response]:
        with self._lock:
            urls = list(self.urls)
        return [requests.post(url, json=event, headers=headers, timeout=30) for url in urls]

    def start(self) -> TriggerSource:
        source = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                try:  # the URL as a JSON string, or as plain text
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                status = 200
                with source._lock:
                    source.requests.append(Recorded("POST", self.path, dict(self.headers), body))
                    if self.path == "/subscribe":
                        status = source.subscribe_status
                        if status < 400 and isinstance(body, str):
                            source.urls.append(body)
                    elif self.path == "/unsubscribe" and body in source.urls:
                        source.urls.remove(body)
                self.reply(status)

        self._serve(Handler, "trigger-source")
        return self


@dataclass
class PollingSource(_Loopback):
    """A polling-trigger source like the Logic Apps PollTriggerController: without a
    ``triggerState`` it answers 202 with a Location carrying one; with a cursor before the end
    it answers 200 with one item, the next cursor, and ``retry-after: 0`` while more wait."""

    items: list[Any] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def start(self) -> PollingSource:
        source = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                with source._lock:
                    source.requests.append(self.path)
                    items = list(source.items)
                _, _, query = self.path.partition("?")
                state = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("triggerState")
                body: Any = None
                if state is None:
                    status, cursor, retry = 202, 0, "1"
                elif int(state) < len(items):
                    status, cursor = 200, int(state) + 1
                    retry = "0" if cursor < len(items) else "1"
                    body = items[int(state)]
                else:
                    status, cursor, retry = 202, int(state), "1"
                self.reply(status, body, {"Location": f"/poll?triggerState={cursor}", "Retry-After": retry})

        self._serve(Handler, "polling-source")
        return self
