"""What every HTTP function shares: JSON responses, error mapping, request conversion.

HTTP-facing errors carry their status (``shared.errors.HttpError``); this is the one place
that turns them, and anything unexpected, into ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.engine import InboundRequest
from shared.errors import (
    BadRequest,
    ConcurrencyConflict,
    ConfigurationError,
    HttpError,
    PayloadTooLarge,
    RunTooLarge,
    ServiceUnavailable,
)

log = logging.getLogger("hookflow.http")

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        headers=headers,
        mimetype="application/json",
        charset="utf-8",
    )


def error_response(error: HttpError) -> func.HttpResponse:
    return json_response(error.to_json(), error.status, error.headers or None)


def handle(handler: Handler) -> Handler:
    """Map Hookflow's errors to their JSON answers; log and hide anything unexpected."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except HttpError as exc:
            return error_response(exc)
        except RunTooLarge as exc:
            return error_response(PayloadTooLarge(str(exc), code="RunTooLarge"))
        except ConcurrencyConflict:
            # Every write retried and still lost: the run is busy; the caller may try again.
            return error_response(
                ServiceUnavailable("the run is changing too fast; try again", code="Busy", headers={"Retry-After": "1"})
            )
        except ConfigurationError as exc:
            log.error("configuration error: %s", exc)
            return json_response({"error": {"code": "ConfigurationError", "message": str(exc)}}, 500)
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return json_response({"error": {"code": "InternalError", "message": "an unexpected error occurred"}}, 500)

    return wrapper


def inbound(req: func.HttpRequest) -> InboundRequest:
    return InboundRequest(method=req.method, url=req.url, headers=dict(req.headers), body=req.get_body() or b"")


def json_body(req: func.HttpRequest) -> Any:
    """The request body as JSON; ``400`` when it is missing or not JSON."""
    raw = req.get_body() or b""
    if not raw.strip():
        raise BadRequest("the request needs a JSON body", code="MissingBody")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="InvalidJson") from exc


def route_param(req: func.HttpRequest, name: str) -> str:
    value = req.route_params.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"missing route parameter {name!r}")
    return value
