"""Fixtures that start real things (Azurite, the dev host, loopback targets) and stop them.

Every process is started on a free port on 127.0.0.1 and stopped by PID at teardown, also
when a test fails. Tables get a fresh prefix per test so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts.azurite import Azurite, free_port
from tests.support.target import PollingSource, ScriptedApi, TriggerSource, WebhookTarget

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite.for_tests() as emulator:
        yield emulator


@pytest.fixture
def table_prefix() -> str:
    return "t" + secrets.token_hex(6)


@pytest.fixture
def target() -> Iterator[WebhookTarget]:
    service = WebhookTarget().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    service = ScriptedApi().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def source() -> Iterator[TriggerSource]:
    service = TriggerSource().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def polling_source() -> Iterator[PollingSource]:
    service = PollingSource().start()
    try:
        yield service
    finally:
        service.stop()


# The secret of the signed-trigger e2e tests: made up per session, handed to the dev host as
# an app setting by name, the way a deployment would.
GITHUB_SECRET_SETTING = "E2E_GITHUB_SECRET"
GITHUB_SECRET = secrets.token_urlsafe(24)


class DevHostProcess:
    """The dev host as a child process, serving ``function_app.app`` over real HTTP."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.api = f"{self.base_url}/api"
        self.log_path = log_path
        # A file, not a pipe: nobody reads a pipe while tests run, and a full pipe would
        # stall the host mid-request.
        self._log = log_path.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "scripts.devhost", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def fire(self, function: str = "sweep") -> None:
        """Run a timer function now, through the admin endpoint, and wait for it to finish."""
        answer = requests.post(f"{self.base_url}/admin/functions/{function}", json={}, timeout=60)
        assert answer.status_code == 200, answer.text

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the dev host exited early:\n{self.output()[-4000:]}")
            try:
                if requests.get(f"{self.base_url}/admin/host/status", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the dev host did not become ready in time")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self._log.close()


@pytest.fixture(scope="session")
def devhost(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "HOOKFLOW_TABLE_PREFIX": "e2e" + secrets.token_hex(4),
        "HOOKFLOW_SIGNING_KEYS": secrets.token_urlsafe(32),
        "HOOKFLOW_ALLOW_PRIVATE_NETWORK": "true",
        "HOOKFLOW_PUBLIC_BASE_URL": "",
        "HOOKFLOW_MAX_BODY_BYTES": "65536",
        GITHUB_SECRET_SETTING: GITHUB_SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    host = DevHostProcess(env, free_port(), tmp_path_factory.mktemp("devhost") / "devhost.log")
    try:
        host.wait_ready()
        yield host
    finally:
        host.stop()
