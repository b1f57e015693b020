"""The ``Http`` action, and the request building that ``HttpWebhook`` shares with it."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from shared import expressions
from shared.errors import ExpressionError
from shared.models import ErrorInfo, HttpRequestSpec
from shared.outbound import OutboundError, OutboundRequest, OutboundResponse, Sender

# Header names whose values never reach stored run history.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-functions-key",
        "x-api-key",
        "api-key",
        "ocp-apim-subscription-key",
        "x-hub-signature",
        "x-hub-signature-256",
        "webhook-signature",
        "stripe-signature",
    }
)
REDACTED = "***"


class TokenProvider:
    """Gets bearer tokens for ``ManagedServiceIdentity`` authentication, lazily."""

    def __init__(self) -> None:
        self._credentials: dict[str | None, Any] = {}

    def token(self, audience: str, identity: str | None) -> str:
        credential = self._credentials.get(identity)
        if credential is None:
            from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

            credential = ManagedIdentityCredential(client_id=identity) if identity else DefaultAzureCredential()
            self._credentials[identity] = credential
        scope = audience.rstrip("/") + "/.default"
        return str(credential.get_token(scope).token)


def evaluate_spec(spec: HttpRequestSpec, ctx: expressions.EvaluationContext) -> dict[str, Any]:
    """Evaluate every expression in a request spec; the result is plain JSON."""
    raw = spec.model_dump(mode="json", exclude_none=True, exclude={"url"})
    value = expressions.evaluate_value(raw, ctx)
    if not isinstance(value, dict):  # pragma: no cover - a dict stays a dict
        raise ExpressionError("request inputs must be an object")
    return value


def build_request(evaluated: Mapping[str, Any], headers: Mapping[str, str], tokens: TokenProvider) -> OutboundRequest:
    """Turn evaluated inputs into a request: queries appended, headers stringified, auth applied."""
    uri = str(evaluated.get("uri", ""))
    queries = evaluated.get("queries") or {}
    if queries:
        parts = urlsplit(uri)
        extra = urlencode({str(k): _text(v) for k, v in queries.items()})
        uri = urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    out_headers = {**headers, **{str(k): _text(v) for k, v in (evaluated.get("headers") or {}).items()}}
    auth = evaluated.get("authentication")
    if isinstance(auth, dict):
        # The authentication object wins over a hand-written header of any spelling.
        out_headers = {k: v for k, v in out_headers.items() if k.lower() != "authorization"}
        kind = str(auth.get("type", ""))
        if kind == "Basic":
            pair = f"{auth.get('username', '')}:{auth.get('password', '')}".encode()
            out_headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif kind == "Raw":
            out_headers["Authorization"] = str(auth.get("value", ""))
        elif kind == "ManagedServiceIdentity":
            out_headers["Authorization"] = "Bearer " + tokens.token(str(auth["audience"]), auth.get("identity"))
    return OutboundRequest(
        method=str(evaluated["method"]).upper(), url=uri, headers=out_headers, body=evaluated.get("body")
    )


def redact_inputs(evaluated: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs as shown in run history: credentials and signature-like headers replaced."""
    shown = dict(evaluated)
    if isinstance(shown.get("headers"), dict):
        shown["headers"] = {k: (REDACTED if k.lower() in SENSITIVE_HEADERS else v) for k, v in shown["headers"].items()}
    if isinstance(shown.get("authentication"), dict):
        shown["authentication"] = {"type": shown["authentication"].get("type")}
    return shown


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Inbound or response headers as stored: credentials and signatures replaced."""
    return {k: (REDACTED if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


def call(sender: Sender, request: OutboundRequest) -> tuple[OutboundResponse | None, ErrorInfo | None]:
    """Send once; return the response, or the error that stood in for one."""
    try:
        return sender.send(request), None
    except OutboundError as exc:
        return None, ErrorInfo(code=exc.code, message=exc.message)


def outcome_error(response: OutboundResponse) -> ErrorInfo | None:
    """2xx and 3xx answers succeed; 4xx and 5xx fail the action, as in Logic Apps."""
    if response.status_code < 400:
        return None
    return ErrorInfo(code="UnexpectedStatusCode", message=f"the target answered {response.status_code}")


def response_outputs(response: OutboundResponse) -> dict[str, Any]:
    out = response.outputs()
    out["headers"] = redact_headers(response.headers)
    return out


def _text(value: Any) -> str:
    """Header and query values are text; non-strings are written as JSON would write them."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
