"""Outbound calls over real HTTP to a loopback API: what the wire shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.outbound import USER_AGENT, OutboundRequest, RequestsSender, new_session
from tests.support.target import Answer, ScriptedApi


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    server = ScriptedApi(
        script={
            "/login": [Answer(200, {"ok": True}, {"Set-Cookie": "session=secret-of-run-1; Path=/"})],
            "/next": [Answer(200, {"ok": True})],
        }
    ).start()
    try:
        yield server
    finally:
        server.stop()


def sender() -> RequestsSender:
    return RequestsSender(new_session(), timeout_seconds=10, max_body_bytes=1 << 20, allow_private_network=True)


def test_a_cookie_one_call_was_given_is_not_sent_on_later_calls(api: ScriptedApi) -> None:
    """One session serves every run: a cookie set for one run must not reach another's call."""
    shared = sender()
    first = shared.send(OutboundRequest("GET", f"{api.base_url}/login"))
    assert first.headers.get("Set-Cookie") == "session=secret-of-run-1; Path=/"  # shown to the run that got it

    shared.send(OutboundRequest("GET", f"{api.base_url}/next"))

    (later,) = api.calls("/next")
    assert "Cookie" not in later.headers
    assert later.headers["User-Agent"] == USER_AGENT


def test_a_cookie_named_in_the_request_headers_is_sent(api: ScriptedApi) -> None:
    sender().send(OutboundRequest("GET", f"{api.base_url}/next", headers={"Cookie": "chosen=1"}))

    (call,) = api.calls("/next")
    assert call.headers["Cookie"] == "chosen=1"
