"""Test doubles for unit tests: a scripted outbound sender and a settable clock.

Nothing here touches the network: :class:`FakeSender` answers every request from a handler
that the test supplies, and records what it was asked; :class:`RecordingSession` stands in
for the ``requests.Session`` under :class:`~shared.outbound.RequestsSender`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from shared.outbound import OutboundRequest, OutboundResponse, Sender

Handler = Callable[[OutboundRequest], OutboundResponse]

EPOCH = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def respond(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> OutboundResponse:
    """An outbound response as a target would give it (body already decoded)."""
    return OutboundResponse(status_code=status, headers=dict(headers or {}), body=body)


class FakeSender(Sender):
    """Records every outbound request and answers it from a scripted handler.

    ``routes`` maps a URL (without its query) to a handler or a canned response; anything else
    goes to ``default``. Handlers may call back into the engine before they return, which is
    how a target that calls back from inside ``subscribe`` is simulated.
    """

    def __init__(self, default: Handler | None = None) -> None:
        self.requests: list[OutboundRequest] = []
        self.routes: dict[str, Handler | OutboundResponse] = {}
        self.default: Handler = default or (lambda _request: respond(200))
        # Each entry is ("start" | "end", url); shows whether calls nested inside each other.
        self.events: list[tuple[str, str]] = []

    def route(self, url: str, answer: Handler | OutboundResponse) -> None:
        self.routes[url] = answer

    def send(self, request: OutboundRequest) -> OutboundResponse:
        self.requests.append(request)
        self.events.append(("start", request.url))
        try:
            answer = self.routes.get(request.url.split("?", 1)[0], self.default)
            return answer if isinstance(answer, OutboundResponse) else answer(request)
        finally:
            self.events.append(("end", request.url))

    def to(self, url: str) -> list[OutboundRequest]:
        """The requests sent to ``url`` (compared without the query string)."""
        return [r for r in self.requests if r.url.split("?", 1)[0] == url]


@dataclass
class FakeClock:
    """A clock that only moves when the test moves it."""

    now: datetime = field(default=EPOCH)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def http_response(status: int = 200, content: bytes = b"", headers: dict[str, str] | None = None) -> requests.Response:
    """A ``requests.Response`` read from memory, as a session would return it with ``stream=True``."""
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    response.raw = io.BytesIO(content)
    return response


class RecordingSession(requests.Session):
    """A session that never opens a socket: it records each call and returns or raises ``answer``."""

    def __init__(self, answer: requests.Response | Exception | None = None) -> None:
        super().__init__()
        self.answer = answer if answer is not None else http_response()
        self.calls: list[dict[str, Any]] = []

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append({"method": method, "url": url, **kwargs})
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer
