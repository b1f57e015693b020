"""Run endpoints: start a run, read it, list a workflow's runs."""

from __future__ import annotations

import azure.functions as func

from functions._http import handle, inbound, json_response, route_param
from shared import bootstrap
from shared.engine import render_run
from shared.errors import BadRequest
from shared.models import RunRecord

bp = func.Blueprint()  # type: ignore[no-untyped-call]

# How soon a client polling a run should look again: soon while actions are running, less
# often while the run waits on something outside.
RETRY_AFTER_RUNNING = "1"
RETRY_AFTER_WAITING = "10"


def run_response(
    run: RunRecord, callback_urls: dict[str, str] | None = None, *, accepted: bool = False
) -> func.HttpResponse:
    """``202`` + ``Location`` + ``Retry-After`` while the run is in progress, else ``200``."""
    body = render_run(run, callback_urls)
    if accepted or not run.status.ended:
        retry = RETRY_AFTER_WAITING if run.status.value == "Waiting" else RETRY_AFTER_RUNNING
        return json_response(body, 202, {"Location": f"/api/runs/{run.id}", "Retry-After": retry})
    return json_response(body, 200)


@bp.route(route="workflows/{name}/runs", methods=["POST", "GET"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow_runs(req: func.HttpRequest) -> func.HttpResponse:
    engine = bootstrap.engine()
    name = route_param(req, "name")
    if req.method == "POST":
        run = engine.start_run(name, inbound(req), idempotency_key=req.headers.get("Idempotency-Key"))
        return run_response(run, engine.callback_urls(run), accepted=True)
    top_raw = req.params.get("top") or "50"
    if not top_raw.isdigit() or not 1 <= int(top_raw) <= 250:
        raise BadRequest("top must be a whole number from 1 to 250", code="InvalidParameter")
    summaries, token = engine.store.list_runs(
        name,
        status=req.params.get("status") or None,
        top=int(top_raw),
        continuation=req.params.get("continuationToken"),
    )
    return json_response(
        {
            "value": [
                {
                    "id": s.id,
                    "workflow": s.workflow,
                    "status": s.status,
                    "startTime": s.start_time,
                    "endTime": s.end_time,
                    "error": s.error,
                }
                for s in summaries
            ],
            "continuationToken": token,
        }
    )


@bp.route(route="runs/{id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handle
def run_cancel(req: func.HttpRequest) -> func.HttpResponse:
    run = bootstrap.engine().cancel_run(route_param(req, "id"))
    return json_response(render_run(run), 200)


@bp.route(route="runs/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@handle
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    engine = bootstrap.engine()
    loaded = engine.get_run(route_param(req, "id"))
    return run_response(loaded.run, engine.callback_urls(loaded.run))
