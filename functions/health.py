"""``GET /api/health``: 200 when storage answers, 503 when it does not."""

from __future__ import annotations

import azure.functions as func

from functions._http import handle, json_response
from shared import __version__, bootstrap

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handle
def health(req: func.HttpRequest) -> func.HttpResponse:
    bootstrap.engine().store.ping()
    return json_response({"status": "Healthy", "version": __version__})
