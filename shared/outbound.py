"""Every outbound HTTP call: encoding, authentication, timeouts, size limits, SSRF guard.

:class:`Sender` is the port; :class:`RequestsSender` the adapter over a ``requests.Session``.
The engine builds an :class:`OutboundRequest` (with the correlation headers it knows) and
gets back an :class:`OutboundResponse` whose body is already decoded the way WDL expects:
JSON when the content type says JSON, text for text, and ``{"$content-type", "$content"}``
(base64) for anything else. Failures to get a response at all raise :class:`OutboundError`.

Redirects are not followed: a 3xx is the answer. Following them would let a target bounce
the engine to an address the SSRF guard refused.
"""

from __future__ import annotations

import base64
import http.cookiejar
import ipaddress
import json
import os
import socket
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters

from shared import __version__
from shared.errors import HookflowError

USER_AGENT = f"hookflow/{__version__}"


class OutboundError(HookflowError):
    """No usable response: connection failed, timed out, was refused by the guard, or too large."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class OutboundRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: dict[str, str]
    body: Any

    def outputs(self) -> dict[str, Any]:
        """The WDL outputs of an HTTP action: ``statusCode``, ``headers``, ``body``."""
        return {"statusCode": self.status_code, "headers": self.headers, "body": self.body}


class Sender(ABC):
    """The port every outbound call goes through."""

    @abstractmethod
    def send(self, request: OutboundRequest) -> OutboundResponse:
        """Send one request; raise :class:`OutboundError` when there is no response."""


def encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """Encode a WDL body: objects/arrays/numbers as JSON, strings as UTF-8 text."""
    if body is None:
        return None
    has_type = any(k.lower() == "content-type" for k in headers)
    if isinstance(body, str):
        if not has_type:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return body.encode()
    if not has_type:
        headers["Content-Type"] = "application/json"
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_body(content: bytes, content_type: str | None) -> Any:
    """Decode a body the way WDL shows it (see the module docstring)."""
    if not content:
        return None
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json") or not media:
        try:
            return json.loads(content)
        except ValueError:
            if media:  # declared JSON but is not: show the text rather than fail the action
                return content.decode("utf-8", errors="replace")
    if media.startswith("text/") or media in ("application/xml", "application/x-www-form-urlencoded") or not media:
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"$content-type": content_type or "application/octet-stream", "$content": base64.b64encode(content).decode()}


def new_session(pool_size: int = 64) -> requests.Session:
    """A ``requests`` session that reads its environment once, not on every request, and keeps no cookies.

    With ``trust_env`` on, requests looks for ``~/.netrc`` and re-reads the proxy and CA
    bundle variables for every request: file-system calls that showed up as a large share of
    a callback's CPU time. When no proxy is configured we read the CA bundle once and turn
    that off; with a proxy configured, requests keeps doing it (it also honours NO_PROXY).
    """
    session = requests.Session()
    # One session serves every run of every workflow: a cookie one target sets must not ride
    # along on another run's call to it. A request that needs a cookie names it in its headers.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    if not urllib.request.getproxies():
        session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    adapter = requests.adapters.HTTPAdapter(pool_connections=32, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class RequestsSender(Sender):
    """:class:`Sender` over a ``requests.Session``."""

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout_seconds: float,
        max_body_bytes: int,
        allow_private_network: bool,
    ) -> None:
        self._session = session
        self._timeout = timeout_seconds
        self._max_body = max_body_bytes
        self._allow_private = allow_private_network

    def send(self, request: OutboundRequest) -> OutboundResponse:
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundError("InvalidUri", "the URI must be an absolute http or https URL")
        if not self._allow_private:
            _refuse_private(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        headers = {"User-Agent": USER_AGENT, **request.headers}
        data = encode_body(request.body, headers)
        try:
            with self._session.request(
                request.method,
                request.url,
                headers=headers,
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                content = self._read_limited(response)
                return OutboundResponse(
                    status_code=response.status_code,
                    headers=dict(response.headers),
                    body=decode_body(content, response.headers.get("Content-Type")),
                )
        except requests.Timeout as exc:
            raise OutboundError("Timeout", f"no answer within {self._timeout:g} seconds") from exc
        except requests.ConnectionError as exc:
            raise OutboundError("ConnectionFailed", f"could not connect to {parts.hostname}") from exc
        except requests.RequestException as exc:
            raise OutboundError("RequestFailed", type(exc).__name__) from exc

    def _read_limited(self, response: requests.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > self._max_body:
                raise OutboundError("ResponseTooLarge", f"the response body is over {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _refuse_private(host: str, port: int) -> None:
    """Refuse hosts that resolve to loopback, private, link-local or reserved addresses.

    This resolves once, before the request; a name that changes its answer between this
    check and the connection (DNS rebinding) is not caught here. Deployments that need that
    guarantee put the app behind an egress firewall as well.
    """
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise OutboundError("ConnectionFailed", f"could not resolve {host}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        # Anything not globally routable: loopback, private, link-local (the metadata
        # endpoint), carrier-grade NAT, reserved, multicast, unspecified.
        if not address.is_global or address.is_multicast:
            raise OutboundError(
                "OutboundBlocked",
                f"{host} resolves to a private or loopback address (HOOKFLOW_ALLOW_PRIVATE_NETWORK=true allows it)",
            )
