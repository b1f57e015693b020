"""Workflow registry endpoints: ``PUT/GET/DELETE /api/workflows/{name}``, ``GET /api/workflows``."""

from __future__ import annotations

import azure.functions as func

from functions._http import handle, json_body, json_response, route_param
from shared import bootstrap, workflows

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="workflows/{name}", methods=["PUT", "GET", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow(req: func.HttpRequest) -> func.HttpResponse:
    engine = bootstrap.engine()
    name = route_param(req, "name")
    if req.method == "PUT":
        stored, created = workflows.put_workflow(engine.store, name, json_body(req), engine.clock())
        return json_response(workflows.render_workflow(stored), 201 if created else 200)
    if req.method == "DELETE":
        workflows.delete_workflow(engine.store, name)
        return func.HttpResponse(status_code=204)
    return json_response(workflows.render_workflow(workflows.get_workflow(engine.store, name)))


@bp.route(route="workflows", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow_list(req: func.HttpRequest) -> func.HttpResponse:
    engine = bootstrap.engine()
    return json_response({"value": [workflows.render_workflow(w) for w in engine.store.list_workflows()]})
