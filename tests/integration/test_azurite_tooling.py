"""The local tooling for real: Azurite started and stopped by PID, the dev host over HTTP."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import azure.functions as func
import pytest
import requests
from azure.data.tables import TableServiceClient

from scripts.azurite import DEV_ACCOUNT_NAME, Azurite, AzuriteError, port_is_open
from scripts.devhost import DevHost


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def emulator() -> Iterator[Azurite]:
    with Azurite.for_tests() as started:
        yield started


@pytest.mark.integration
class TestAzurite:
    def test_tables_and_entities_round_trip(self, emulator: Azurite) -> None:
        """A table and an entity created through the SDK with the test account read back."""
        with TableServiceClient.from_connection_string(emulator.connection_string) as service:
            table = service.create_table("tooling")
            with table:
                table.create_entity({"PartitionKey": "p", "RowKey": "r", "value": 42})
                assert table.get_entity("p", "r")["value"] == 42
            assert [t.name for t in service.list_tables()] == ["tooling"]

    def test_test_account_is_random_and_not_the_dev_account(self) -> None:
        """Each test emulator gets its own lowercase account name and a fresh key."""
        first, second = Azurite.for_tests(), Azurite.for_tests()
        assert first.account_name != second.account_name
        assert first.account_name != DEV_ACCOUNT_NAME
        assert first.account_name.isalpha()
        assert first.account_name.islower()
        assert first.accounts != second.accounts

    def test_connection_string_names_account_and_endpoint(self, emulator: Azurite) -> None:
        """The connection string addresses the path-style endpoint on 127.0.0.1."""
        parts = dict(p.split("=", 1) for p in emulator.connection_string.rstrip(";").split(";"))
        assert parts["AccountName"] == emulator.account_name
        assert parts["TableEndpoint"] == f"http://127.0.0.1:{emulator.port}/{emulator.account_name}"

    def test_stop_frees_the_port_and_is_idempotent(self) -> None:
        """After stop() nothing listens on the port and a second stop() does nothing."""
        azurite = Azurite.for_tests()
        try:
            azurite.start()
            port = azurite.port
            pid = azurite.pid
            assert pid is not None
            assert port_is_open(port)
        finally:
            azurite.stop()
        assert not azurite.running
        assert azurite.pid is None
        assert _wait_until(lambda: not port_is_open(port), timeout=5)
        if hasattr(os, "killpg"):
            # The whole process group is gone, not just the launcher.
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)
        azurite.stop()

    def test_context_manager_stops_on_error(self) -> None:
        """An exception inside ``with`` still stops the emulator."""
        azurite = Azurite.for_tests()
        ports: list[int] = []

        def fail_inside() -> None:
            with azurite:
                ports.append(azurite.port)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_inside()
        assert not azurite.running
        assert _wait_until(lambda: not port_is_open(ports[0]), timeout=5)

    def test_port_in_use_is_reported(self) -> None:
        """Starting on a port something else listens on fails clearly, without starting Azurite."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            azurite = Azurite(port=blocker.getsockname()[1])
            with pytest.raises(AzuriteError, match="already in use"):
                azurite.start()
            assert not azurite.running


# -- the dev host ---------------------------------------------------------------------


class _Calls:
    """What the test app's functions saw, shared with the test."""

    def __init__(self) -> None:
        self.timer: list[bool] = []


def _build_app(calls: _Calls) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="items/{name}", methods=["GET"])
    def get_item(req: func.HttpRequest) -> func.HttpResponse:
        document = {"name": req.route_params["name"], "url": req.url, "params": dict(req.params)}
        return func.HttpResponse(json.dumps(document), mimetype="application/json")

    @app.route(route="items/special", methods=["GET"])
    def special_item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("special")

    @app.route(route="echo", methods=["POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        response = func.HttpResponse(req.get_body(), status_code=201, mimetype="application/octet-stream")
        response.headers.add("X-Seen", req.headers.get("content-type", ""))
        response.headers.add("X-Seen", "twice")
        return response

    @app.route(route="boom", methods=["GET"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("the function failed")

    @app.timer_trigger(schedule="%HF_TEST_NEVER%", arg_name="timer", run_on_startup=False)
    def count(timer: func.TimerRequest) -> None:
        calls.timer.append(timer.past_due)

    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer")
    def broken(timer: func.TimerRequest) -> None:
        raise ValueError("the timer failed")

    return app


@pytest.fixture
def calls() -> _Calls:
    return _Calls()


@pytest.fixture
def devhost(calls: _Calls, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevHost]:
    # 1 January at midnight: the scheduler runs, but never fires during a test.
    monkeypatch.setenv("HF_TEST_NEVER", "0 0 0 1 1 *")
    host = DevHost(_build_app(calls), port=0, route_prefix="api", max_body_bytes=1024)
    with host:
        yield host


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must never see loopback traffic
        yield session


@pytest.mark.e2e
class TestDevHost:
    def test_status_endpoint_answers(self, devhost: DevHost, http: requests.Session) -> None:
        """``GET /admin/host/status`` reports Running, the readiness probe tests use."""
        answer = http.get(f"{devhost.base_url}/admin/host/status", timeout=5)
        assert answer.status_code == 200
        assert answer.json() == {"state": "Running"}

    def test_route_params_url_and_query(self, devhost: DevHost, http: requests.Session) -> None:
        """The function gets decoded route params, the absolute URL and first query values."""
        answer = http.get(f"{devhost.api_url}/items/a%20b?x=1&x=2&y=", timeout=5)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json() == {
            "name": "a b",
            "url": f"{devhost.api_url}/items/a%20b?x=1&x=2&y=",
            "params": {"x": "1", "y": ""},
        }

    def test_literal_route_wins(self, devhost: DevHost, http: requests.Session) -> None:
        """``items/special`` is served by its own function, not by ``items/{name}``."""
        answer = http.get(f"{devhost.api_url}/items/special", timeout=5)
        assert answer.status_code == 200
        assert answer.text == "special"
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"

    def test_post_body_status_and_repeated_headers(self, devhost: DevHost, http: requests.Session) -> None:
        """A POST body reaches the function; status and repeated headers come back."""
        answer = http.post(
            f"{devhost.api_url}/echo", data=b"\x00hello", headers={"Content-Type": "text/x-test"}, timeout=5
        )
        assert answer.status_code == 201
        assert answer.content == b"\x00hello"
        assert answer.raw.headers.getlist("X-Seen") == ["text/x-test", "twice"]

    def test_post_without_body(self, devhost: DevHost, http: requests.Session) -> None:
        """A POST with no body gives the function an empty body."""
        answer = http.post(f"{devhost.api_url}/echo", timeout=5)
        assert answer.status_code == 201
        assert answer.content == b""

    def test_body_over_the_limit_is_refused(self, devhost: DevHost, http: requests.Session) -> None:
        """A body over the host's limit answers 413 without calling the function."""
        answer = http.post(f"{devhost.api_url}/echo", data=b"x" * 2048, timeout=5)
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "PayloadTooLarge"

    def test_unknown_route_is_a_json_404(self, devhost: DevHost, http: requests.Session) -> None:
        """Paths no function serves, inside or outside the prefix, answer a JSON 404."""
        for url in (f"{devhost.api_url}/nothing/here", f"{devhost.base_url}/elsewhere"):
            answer = http.get(url, timeout=5)
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "NotFound"

    def test_wrong_method_is_a_json_405(self, devhost: DevHost, http: requests.Session) -> None:
        """A known route called with another method answers 405 with Allow."""
        answer = http.delete(f"{devhost.api_url}/items/x", timeout=5)
        assert answer.status_code == 405
        assert answer.headers["Allow"] == "GET"
        assert answer.json()["error"]["code"] == "MethodNotAllowed"

    def test_function_error_is_a_json_500(self, devhost: DevHost, http: requests.Session) -> None:
        """A function that raises answers 500 with a JSON error and the host keeps serving."""
        answer = http.get(f"{devhost.api_url}/boom", timeout=5)
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "InternalError"
        assert "the function failed" not in answer.text
        assert http.get(f"{devhost.api_url}/items/still", timeout=5).status_code == 200

    def test_admin_endpoint_fires_the_timer(self, devhost: DevHost, http: requests.Session, calls: _Calls) -> None:
        """``POST /admin/functions/count`` runs the timer once and answers after it finished."""
        answer = http.post(f"{devhost.base_url}/admin/functions/count", json={"input": ""}, timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"name": "count", "status": "Succeeded", "error": None}
        assert calls.timer == [False]

    def test_admin_endpoint_reports_a_failing_timer(self, devhost: DevHost, http: requests.Session) -> None:
        """A timer that raises is reported as Failed with its error, and is not fatal."""
        answer = http.post(f"{devhost.base_url}/admin/functions/broken", timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"name": "broken", "status": "Failed", "error": "ValueError: the timer failed"}
        assert http.get(f"{devhost.base_url}/admin/host/status", timeout=5).status_code == 200

    def test_admin_endpoint_unknown_function_is_404(self, devhost: DevHost, http: requests.Session) -> None:
        """Firing a function the app does not have answers 404."""
        answer = http.post(f"{devhost.base_url}/admin/functions/nope", timeout=5)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "NotFound"

    def test_listing_shows_routes_and_schedules(self, devhost: DevHost) -> None:
        """The startup listing names each function with its route or resolved schedule."""
        lines = devhost.describe_functions()
        assert f"get_item: [GET] {devhost.api_url}/items/{{name}}" in lines
        assert "count: timerTrigger (0 0 0 1 1 *)" in lines

    def test_stop_frees_the_port(self, calls: _Calls, http: requests.Session) -> None:
        """After stop() the port accepts no connections and can be bound again; stop() twice is fine."""
        host = DevHost(_build_app(calls), port=0, route_prefix="api", timers_enabled=False)
        try:
            host.start()
            port = host.port
            # A kept-alive connection must not keep the host (or the port) busy after stop().
            assert http.get(f"{host.base_url}/admin/host/status", timeout=5).status_code == 200
        finally:
            host.stop()
        assert not port_is_open(port)
        assert _can_bind(port)
        host.stop()

    def test_timer_fires_on_its_schedule(self, http: requests.Session) -> None:
        """A timer scheduled every second is called by the scheduler with a TimerRequest."""
        seen: list[object] = []
        app = func.FunctionApp()

        @app.timer_trigger(schedule="* * * * * *", arg_name="tick")
        def every_second(tick: func.TimerRequest) -> None:
            seen.append(tick)

        with DevHost(app, port=0, route_prefix="api"):
            assert _wait_until(lambda: len(seen) >= 1, timeout=10)
        assert isinstance(seen[0], func.TimerRequest)
        assert seen[0].past_due is False
        # Stopped means stopped: the scheduler and its invocations are gone once stop() returns.
        assert not [t.name for t in threading.enumerate() if t.name.startswith("devhost-")]
