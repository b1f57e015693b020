"""Callback receipt: anonymous, protected by the signature in the callback URL."""

from __future__ import annotations

import azure.functions as func

from functions._http import handle, inbound, json_response, route_param
from shared import bootstrap
from shared.engine import render_run

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="callbacks/runs/{run_id}/actions/{action}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handle
def action_callback(req: func.HttpRequest) -> func.HttpResponse:
    engine = bootstrap.engine()
    run = engine.receive_action_callback(
        route_param(req, "run_id"), route_param(req, "action"), dict(req.params), inbound(req)
    )
    return json_response(render_run(run))
