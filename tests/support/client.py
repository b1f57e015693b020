"""Calls on the dev host's API that end-to-end tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from tests.conftest import DevHostProcess


def get_run(devhost: DevHostProcess, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = requests.get(f"{devhost.api}/runs/{run_id}", timeout=30).json()
    return run


def list_runs(devhost: DevHostProcess, workflow: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{devhost.api}/workflows/{workflow}/runs", timeout=30).json()
    runs: list[dict[str, Any]] = answer["value"]
    return runs


def sweep_until(devhost: DevHostProcess, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Fire the sweep until ``condition`` holds; fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        devhost.fire()
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("the expected change did not happen in time")
