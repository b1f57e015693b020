"""Workflow endpoints: ``PUT/GET/DELETE /api/workflows/{name}``, ``GET /api/workflows``,
``POST /api/workflows/{name}/enable|disable``, and the trigger URL (anonymous, signed)."""

from __future__ import annotations

import azure.functions as func

from functions._http import handle, inbound, json_body, json_response, route_param
from shared import bootstrap
from shared.engine import render_run

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="workflows/{name}", methods=["PUT", "GET", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow(req: func.HttpRequest) -> func.HttpResponse:
    registry = bootstrap.workflows()
    name = route_param(req, "name")
    if req.method == "PUT":
        stored, created = registry.put(name, json_body(req), inbound(req).base_url)
        return json_response(registry.render(stored), 201 if created else 200)
    if req.method == "DELETE":
        registry.delete(name)
        return func.HttpResponse(status_code=204)
    return json_response(registry.render(registry.get(name)))


@bp.route(route="workflows", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow_list(req: func.HttpRequest) -> func.HttpResponse:
    registry = bootstrap.workflows()
    return json_response({"value": [registry.render(w) for w in registry.store.list_workflows()]})


@bp.route(route="workflows/{name}/enable", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow_enable(req: func.HttpRequest) -> func.HttpResponse:
    registry = bootstrap.workflows()
    stored = registry.set_state(route_param(req, "name"), enabled=True, base_url=inbound(req).base_url)
    return json_response(registry.render(stored))


@bp.route(route="workflows/{name}/disable", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handle
def workflow_disable(req: func.HttpRequest) -> func.HttpResponse:
    registry = bootstrap.workflows()
    stored = registry.set_state(route_param(req, "name"), enabled=False, base_url=inbound(req).base_url)
    return json_response(registry.render(stored))


@bp.route(route="callbacks/workflows/{name}/triggers/{trigger}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handle
def trigger_callback(req: func.HttpRequest) -> func.HttpResponse:
    """A POST to a trigger's URL starts a run: ``202`` + ``Location`` of the run."""
    registry = bootstrap.workflows()
    run, _ = registry.receive_trigger_callback(
        route_param(req, "name"), route_param(req, "trigger"), dict(req.params), inbound(req)
    )
    return json_response(render_run(run), 202, {"Location": f"/api/runs/{run.id}", "Retry-After": "1"})
