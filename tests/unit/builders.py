"""Small factories for the inputs of unit tests: definitions, PUT bodies, requests, callbacks.

Each factory gives a valid, minimal value; keyword arguments change only what a test is about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.engine import InboundRequest

TARGET = "https://target.example"
SUBSCRIBE_URI = f"{TARGET}/subscribe"
UNSUBSCRIBE_URI = f"{TARGET}/unsubscribe"
BASE_URL = "https://hookflow.example"


def request_trigger(**extra: Any) -> dict[str, Any]:
    """The manual ``Request`` trigger."""
    return {"type": "Request", "kind": "Http", **extra}


# Builders ask for no retries unless told otherwise, so that one answer decides an attempt;
# the tests of retry policies pass one explicitly.
NO_RETRY: dict[str, Any] = {"type": "none"}


def http_action(
    uri: str = f"{TARGET}/api",
    *,
    method: str = "GET",
    retry: dict[str, Any] | None = NO_RETRY,
    limit: dict[str, Any] | None = None,
    run_after: dict[str, list[str]] | None = None,
    headers: dict[str, Any] | None = None,
    body: Any = None,
    authentication: dict[str, Any] | None = None,
    type_: str = "Http",
    **extra: Any,
) -> dict[str, Any]:
    """An ``Http`` action."""
    inputs: dict[str, Any] = {"method": method, "uri": uri}
    if headers is not None:
        inputs["headers"] = headers
    if body is not None:
        inputs["body"] = body
    if authentication is not None:
        inputs["authentication"] = authentication
    if retry is not None:
        inputs["retryPolicy"] = retry
    action: dict[str, Any] = {"type": type_, "inputs": inputs, **extra}
    if run_after is not None:
        action["runAfter"] = run_after
    if limit is not None:
        action["limit"] = limit
    return action


def webhook_action(
    *,
    subscribe_uri: str = SUBSCRIBE_URI,
    subscribe_method: str = "POST",
    subscribe_headers: dict[str, Any] | None = None,
    subscribe_body: Any = None,
    authentication: dict[str, Any] | None = None,
    unsubscribe: dict[str, Any] | None = None,
    with_unsubscribe: bool = True,
    run_after: dict[str, list[str]] | None = None,
    type_: str = "HttpWebhook",
    subscribe_retry: dict[str, Any] | None = NO_RETRY,
    unsubscribe_retry: dict[str, Any] | None = NO_RETRY,
    limit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``HttpWebhook`` action that hands its callback URL to the target in the body.

    By default it unsubscribes with ``POST {UNSUBSCRIBE_URI}`` and the callback URL as body.
    """
    subscribe: dict[str, Any] = {
        "method": subscribe_method,
        "uri": subscribe_uri,
        "body": {"callbackUrl": "@listCallbackUrl()"} if subscribe_body is None else subscribe_body,
    }
    if subscribe_headers is not None:
        subscribe["headers"] = subscribe_headers
    if authentication is not None:
        subscribe["authentication"] = authentication
    if subscribe_retry is not None:
        subscribe["retryPolicy"] = subscribe_retry
    inputs: dict[str, Any] = {"subscribe": subscribe}
    if unsubscribe is not None:
        inputs["unsubscribe"] = unsubscribe
    elif with_unsubscribe:
        inputs["unsubscribe"] = {
            "method": "POST",
            "uri": UNSUBSCRIBE_URI,
            "body": {"callbackUrl": "@listCallbackUrl()"},
        }
    if unsubscribe_retry is not None and "unsubscribe" in inputs:
        inputs["unsubscribe"] = {**inputs["unsubscribe"], "retryPolicy": unsubscribe_retry}
    action: dict[str, Any] = {"type": type_, "inputs": inputs}
    if run_after is not None:
        action["runAfter"] = run_after
    if limit is not None:
        action["limit"] = limit
    return action


def definition(
    actions: dict[str, Any] | None = None, *, triggers: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A workflow definition with a manual trigger unless ``triggers`` says otherwise."""
    return {
        "triggers": {"manual": request_trigger()} if triggers is None else triggers,
        "actions": actions or {},
        **extra,
    }


def put_body(definition_: dict[str, Any] | None = None, *, state: str = "Enabled", **extra: Any) -> dict[str, Any]:
    """The body of ``PUT /api/workflows/{name}``."""
    return {"definition": definition() if definition_ is None else definition_, "state": state, **extra}


def inbound(
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    method: str = "POST",
    url: str = f"{BASE_URL}/api/workflows/wf/runs",
) -> InboundRequest:
    """An inbound request; a non-``None`` ``body`` is sent as JSON unless ``raw`` is given."""
    all_headers = dict(headers or {})
    if raw is None:
        if body is None:
            raw = b""
        else:
            raw = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
    return InboundRequest(method=method, url=url, headers=all_headers, body=raw)


@dataclass(frozen=True)
class CallbackAddress:
    """A callback URL taken apart the way the Functions route hands it to the engine."""

    url: str
    run_id: str
    action: str
    query: dict[str, str]


def parse_callback_url(url: str) -> CallbackAddress:
    """Split ``.../api/callbacks/runs/{run_id}/actions/{action}?...`` into decoded parts."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    runs = segments.index("runs")
    assert segments[runs + 2] == "actions", url
    return CallbackAddress(
        url=url,
        run_id=unquote(segments[runs + 1]),
        action=unquote(segments[runs + 3]),
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )


def callback_request(
    address: CallbackAddress, body: Any = None, *, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> InboundRequest:
    """The POST a target makes to a callback URL (JSON ``body``, or ``raw`` bytes as given)."""
    return inbound(body, headers=headers, raw=raw, url=address.url)
