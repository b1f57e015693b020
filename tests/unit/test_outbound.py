"""Outbound calls: body encoding and decoding, the SSRF guard, and what reaches the session.

No test opens a socket: hosts are literal IP addresses (no DNS lookup) and the session is a
:class:`~tests.unit.fakes.RecordingSession`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from shared.outbound import (
    USER_AGENT,
    OutboundError,
    OutboundRequest,
    RequestsSender,
    decode_body,
    encode_body,
)
from tests.unit.fakes import RecordingSession, http_response

PUBLIC_HOST = "8.8.8.8"


def sender(
    session: RecordingSession | None = None, *, allow_private: bool = False, max_body: int = 1024
) -> RequestsSender:
    return RequestsSender(
        session or RecordingSession(),
        timeout_seconds=5,
        max_body_bytes=max_body,
        allow_private_network=allow_private,
    )


class TestEncodeBody:
    def test_object_is_sent_as_compact_json(self) -> None:
        """An object body goes out as JSON with a JSON content type."""
        headers: dict[str, str] = {}

        data = encode_body({"a": 1, "b": [True, None]}, headers)

        assert data == b'{"a":1,"b":[true,null]}'
        assert headers == {"Content-Type": "application/json"}

    @pytest.mark.parametrize(("body", "expected"), [([1, 2], b"[1,2]"), (42, b"42"), (False, b"false")])
    def test_arrays_numbers_and_booleans_are_json(self, body: Any, expected: bytes) -> None:
        """Non-string JSON values are written as JSON."""
        headers: dict[str, str] = {}

        assert encode_body(body, headers) == expected
        assert headers["Content-Type"] == "application/json"

    def test_string_is_sent_as_utf8_text(self) -> None:
        """A string body goes out as UTF-8 text, not as a quoted JSON string."""
        headers: dict[str, str] = {}

        assert encode_body("grüße", headers) == "grüße".encode()
        assert headers == {"Content-Type": "text/plain; charset=utf-8"}

    def test_non_ascii_json_stays_utf8(self) -> None:
        """Non-ASCII characters in JSON are sent as UTF-8, not as escapes."""
        assert encode_body({"name": "Zoë"}, {}) == '{"name":"Zoë"}'.encode()

    def test_declared_content_type_is_kept(self) -> None:
        """A content type the definition sets, in any letter case, is not overwritten."""
        headers = {"content-type": "application/vnd.api+json"}

        assert encode_body({"a": 1}, headers) == b'{"a":1}'
        assert headers == {"content-type": "application/vnd.api+json"}

    def test_no_body_sends_nothing(self) -> None:
        """A request without a body sends no body and no content type."""
        headers: dict[str, str] = {}

        assert encode_body(None, headers) is None
        assert headers == {}


class TestDecodeBody:
    @pytest.mark.parametrize(
        "content_type", ["application/json", "application/json; charset=utf-8", "application/problem+json", None]
    )
    def test_json_is_parsed(self, content_type: str | None) -> None:
        """JSON (declared, a ``+json`` type, or undeclared) is shown as a JSON value."""
        assert decode_body(b'{"ok": true, "n": [1]}', content_type) == {"ok": True, "n": [1]}

    @pytest.mark.parametrize("content_type", ["text/plain", "text/html; charset=utf-8", "application/xml", None])
    def test_text_is_shown_as_a_string(self, content_type: str | None) -> None:
        """Text bodies are shown as strings."""
        assert decode_body("<p>hé</p>".encode(), content_type) == "<p>hé</p>"

    def test_binary_is_shown_as_content_type_and_base64(self) -> None:
        """Binary bodies become ``$content-type`` and base64 ``$content``, and round-trip."""
        content = bytes(range(256))

        shown = decode_body(content, "image/png")

        assert shown == {"$content-type": "image/png", "$content": base64.b64encode(content).decode()}
        assert base64.b64decode(shown["$content"]) == content

    def test_undeclared_binary_is_octet_stream(self) -> None:
        """Bytes that are neither JSON nor UTF-8 and carry no type are shown as octet-stream."""
        shown = decode_body(b"\xff\xfe\x00\x01", None)

        assert shown == {
            "$content-type": "application/octet-stream",
            "$content": base64.b64encode(b"\xff\xfe\x00\x01").decode(),
        }

    def test_invalid_json_declared_as_json_is_shown_as_text(self) -> None:
        """A body that claims to be JSON but is not is shown as its text rather than failing."""
        assert decode_body(b"{not json", "application/json") == "{not json"

    @pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
    def test_empty_body_is_null(self, content_type: str | None) -> None:
        """An empty body is ``null`` whatever its type."""
        assert decode_body(b"", content_type) is None


class TestSsrfGuard:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/hook",
            "http://127.0.0.1:8080/hook",
            "http://10.0.0.5/hook",
            "https://10.255.1.2/hook",
            "http://192.168.1.1/hook",
            "http://172.16.0.1/hook",
            "http://169.254.169.254/metadata/instance",
            "http://[::1]/hook",
            "http://[fe80::1]/hook",
            "http://0.0.0.0/hook",
        ],
    )
    def test_private_addresses_are_refused_before_connecting(self, url: str) -> None:
        """Loopback, private, link-local and unspecified addresses are refused, and nothing is sent."""
        session = RecordingSession()

        with pytest.raises(OutboundError) as caught:
            sender(session).send(OutboundRequest("POST", url, body={"a": 1}))

        assert caught.value.code == "OutboundBlocked"
        assert "HOOKFLOW_ALLOW_PRIVATE_NETWORK" in caught.value.message
        assert session.calls == []

    def test_private_address_is_allowed_when_configured(self) -> None:
        """With ``allow_private_network`` a loopback target is called (local development)."""
        session = RecordingSession(http_response(204))

        response = sender(session, allow_private=True).send(OutboundRequest("GET", "http://127.0.0.1:7071/x"))

        assert response.status_code == 204
        assert [c["url"] for c in session.calls] == ["http://127.0.0.1:7071/x"]

    def test_public_address_is_allowed(self) -> None:
        """A public address passes the guard."""
        session = RecordingSession(http_response(200))

        sender(session).send(OutboundRequest("GET", f"http://{PUBLIC_HOST}/x"))

        assert len(session.calls) == 1

    @pytest.mark.parametrize(
        "url", ["ftp://8.8.8.8/file", "file:///etc/passwd", "gopher://8.8.8.8/", "/relative/path", "http:///no-host"]
    )
    def test_non_http_urls_are_refused(self, url: str) -> None:
        """Only absolute http and https URLs are called, even when private networks are allowed."""
        session = RecordingSession()

        with pytest.raises(OutboundError) as caught:
            sender(session, allow_private=True).send(OutboundRequest("GET", url))

        assert caught.value.code == "InvalidUri"
        assert session.calls == []


class TestRequestsSender:
    def test_request_carries_user_agent_and_headers_and_does_not_follow_redirects(self) -> None:
        """What goes out: the engine's User-Agent, the given headers, the encoded body, no redirects."""
        session = RecordingSession(http_response(302, headers={"Location": "http://127.0.0.1/"}))
        request = OutboundRequest("POST", f"https://{PUBLIC_HOST}/subscribe", {"x-ms-workflow-name": "wf"}, {"a": 1})

        response = sender(session).send(request)

        assert response.status_code == 302
        (call,) = session.calls
        assert call["method"] == "POST"
        assert call["headers"]["User-Agent"] == USER_AGENT
        assert USER_AGENT.startswith("hookflow/")
        assert call["headers"]["x-ms-workflow-name"] == "wf"
        assert call["headers"]["Content-Type"] == "application/json"
        assert json.loads(call["data"]) == {"a": 1}
        assert call["allow_redirects"] is False
        assert call["timeout"] == 5

    def test_response_body_is_decoded(self) -> None:
        """The response comes back with its status, headers and a decoded body."""
        session = RecordingSession(http_response(200, b'{"id": 7}', {"Content-Type": "application/json"}))

        response = sender(session).send(OutboundRequest("GET", f"https://{PUBLIC_HOST}/x"))

        assert response.outputs() == {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": {"id": 7},
        }

    def test_response_over_the_limit_is_refused(self) -> None:
        """A response body larger than the limit is an error, not a truncated body."""
        session = RecordingSession(http_response(200, b"x" * 2000, {"Content-Type": "text/plain"}))

        with pytest.raises(OutboundError) as caught:
            sender(session, max_body=1024).send(OutboundRequest("GET", f"https://{PUBLIC_HOST}/x"))

        assert caught.value.code == "ResponseTooLarge"

    @pytest.mark.parametrize(
        ("failure", "code"),
        [
            (requests.ConnectTimeout(), "Timeout"),
            (requests.ReadTimeout(), "Timeout"),
            (requests.ConnectionError(), "ConnectionFailed"),
            (requests.TooManyRedirects(), "RequestFailed"),
        ],
    )
    def test_transport_failures_become_outbound_errors(self, failure: Exception, code: str) -> None:
        """A call that gets no answer fails with a code saying why."""
        with pytest.raises(OutboundError) as caught:
            sender(RecordingSession(failure)).send(OutboundRequest("GET", f"https://{PUBLIC_HOST}/x"))

        assert caught.value.code == code
