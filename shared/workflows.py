"""The workflow registry: save, read, list and delete definitions."""

from __future__ import annotations

from typing import Any

from shared.durations import iso
from shared.errors import BadRequest, NotFound
from shared.models import NAME_PATTERN, parse_workflow_put
from shared.store import Store, StoredWorkflow


def validate_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise BadRequest(
            "workflow names start with a letter or digit and hold letters, digits, '_', '.', '-' (at most 80)",
            code="InvalidName",
        )


def put_workflow(store: Store, name: str, body: Any, now: Any) -> tuple[StoredWorkflow, bool]:
    """Validate and save a workflow; nothing is stored when the definition is invalid."""
    validate_name(name)
    put = parse_workflow_put(body)
    definition = put.definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    return store.put_workflow(name, definition, put.state.value, now)


def get_workflow(store: Store, name: str) -> StoredWorkflow:
    validate_name(name)
    stored = store.get_workflow(name)
    if stored is None:
        raise NotFound(f"workflow {name!r} does not exist", code="WorkflowNotFound")
    return stored


def render_workflow(stored: StoredWorkflow) -> dict[str, Any]:
    return {
        "name": stored.name,
        "state": stored.state,
        "version": stored.version,
        "createdTime": iso(stored.created_time),
        "changedTime": iso(stored.changed_time),
        "definition": stored.definition,
    }


def delete_workflow(store: Store, name: str) -> None:
    """Delete a workflow. Runs already started keep the definition they pinned and go on."""
    validate_name(name)
    if not store.delete_workflow(name):
        raise NotFound(f"workflow {name!r} does not exist", code="WorkflowNotFound")
