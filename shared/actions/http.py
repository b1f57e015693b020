"""The ``Http`` action, and the request building that ``HttpWebhook`` shares with it."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
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
# Headers a front end adds that repeat the request URL, query string (and function key) included.
URL_HEADERS = frozenset(
    {
        "x-original-url",
        "x-waws-unencoded-url",
        "x-ms-original-url",
        "referer",
        # Status URLs of asynchronous APIs carry keys (Durable Functions puts its system key
        # in the query string): shown without them; the run keeps the one it must poll.
        "location",
        "content-location",
        "azure-asyncoperation",
        "operation-location",
    }
)
# Query parameters whose values are credentials wherever they appear.
SENSITIVE_PARAMS = frozenset(
    {"code", "sig", "signature", "key", "api-key", "apikey", "token", "access_token", "secret"}
)


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


def redact_query(url: str) -> str:
    """A URL with the values of credential-like query parameters replaced by ``***``."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and name.lower() in SENSITIVE_PARAMS else part)
    return head + "?" + "&".join(parts)


def replace_text(value: Any, old: str, new: str) -> Any:
    """``value`` with every occurrence of ``old`` inside its strings replaced by ``new``."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: replace_text(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_text(v, old, new) for v in value]
    return value


def redact_inputs(evaluated: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs as shown in run history: credentials, signature-like headers and credential
    query parameters replaced."""
    shown = dict(evaluated)
    if isinstance(shown.get("uri"), str):
        shown["uri"] = redact_query(shown["uri"])
    if isinstance(shown.get("queries"), dict):
        shown["queries"] = {
            k: (REDACTED if str(k).lower() in SENSITIVE_PARAMS else v) for k, v in shown["queries"].items()
        }
    if isinstance(shown.get("headers"), dict):
        shown["headers"] = {k: (REDACTED if k.lower() in SENSITIVE_HEADERS else v) for k, v in shown["headers"].items()}
    if isinstance(shown.get("authentication"), dict):
        shown["authentication"] = {"type": shown["authentication"].get("type")}
    return shown


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Inbound or response headers as stored: credentials and signatures replaced, and
    headers that repeat a URL keep it without credential-like query parameters."""
    out = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in SENSITIVE_HEADERS:
            out[name] = REDACTED
        elif lowered in URL_HEADERS:
            out[name] = redact_query(value)
        else:
            out[name] = value
    return out


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
