"""Callback URL signatures.

A callback URL names what it resumes in its path and carries its proof in the query, in the
spirit of a Logic Apps SAS URL::

    {base}/api/callbacks/runs/{run_id}/actions/{action}?sv=1&nonce={nonce}&sig={signature}

``sig`` is an HMAC-SHA256 (URL-safe base64, no padding) over a canonical string built from
the *decoded* path parts and the other query parameters, so re-encoding the URL (``%5F`` for
``_``, a different base URL behind a proxy) does not break it, while changing any part does.

Keys come from ``HOOKFLOW_SIGNING_KEYS``: the first signs, every key verifies, so a new key
can be put in front and the old one dropped once the runs it signed are over. The nonce is
fresh for every wait, so a URL from an earlier wait can never resume a later one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from shared.errors import Unauthorized

SIGNATURE_VERSION = "1"
ACTION_CALLBACK_ROUTE = "callbacks/runs/{run_id}/actions/{action}"
TRIGGER_CALLBACK_ROUTE = "callbacks/workflows/{workflow}/triggers/{trigger}"


def new_nonce() -> str:
    """A fresh, unguessable wait nonce (128 bits)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class CallbackTarget:
    """What a verified action callback URL points at."""

    run_id: str
    action: str
    nonce: str


class CallbackSigner:
    """Signs and verifies callback URLs with a rotating set of keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = tuple(keys)

    def action_url(self, base_url: str, run_id: str, action: str, nonce: str) -> str:
        """The absolute callback URL of one wait of one action."""
        path = ACTION_CALLBACK_ROUTE.format(run_id=quote(run_id, safe=""), action=quote(action, safe=""))
        params = {"sv": SIGNATURE_VERSION, "nonce": nonce}
        params["sig"] = self._sign(self._keys[0], "action", (run_id, action), params)
        return f"{base_url.rstrip('/')}/api/{path}?{urlencode(params)}"

    def trigger_url(self, base_url: str, workflow: str, trigger: str, nonce: str) -> str:
        """The absolute URL of a workflow's trigger (its invoke URL, or a webhook's callback URL)."""
        path = TRIGGER_CALLBACK_ROUTE.format(workflow=quote(workflow, safe=""), trigger=quote(trigger, safe=""))
        params = {"sv": SIGNATURE_VERSION, "nonce": nonce}
        params["sig"] = self._sign(self._keys[0], "trigger", (workflow, trigger), params)
        return f"{base_url.rstrip('/')}/api/{path}?{urlencode(params)}"

    def verify_trigger(self, workflow: str, trigger: str, query: Mapping[str, str]) -> CallbackTarget:
        """Check a trigger URL's signature; raise :class:`Unauthorized` when it fails."""
        self._verify("trigger", (workflow, trigger), query)
        return CallbackTarget(run_id=workflow, action=trigger, nonce=query.get("nonce") or "")

    def verify_action(self, run_id: str, action: str, query: Mapping[str, str]) -> CallbackTarget:
        """Check an action callback's signature; raise :class:`Unauthorized` when it fails."""
        nonce = query.get("nonce") or ""
        self._verify("action", (run_id, action), query)
        return CallbackTarget(run_id=run_id, action=action, nonce=nonce)

    def _verify(self, kind: str, parts: tuple[str, ...], query: Mapping[str, str]) -> None:
        given = query.get("sig")
        if not given:
            raise Unauthorized("the callback URL has no signature", code="MissingSignature")
        if query.get("sv") != SIGNATURE_VERSION:
            raise Unauthorized("the callback URL's signature version is not supported", code="InvalidSignature")
        params = {k: v for k, v in query.items() if k != "sig"}
        # Compare against every key, without stopping early, so timing says nothing about
        # which key (if any) matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(self._sign(key, kind, parts, params).encode(), given.encode())
        if not matched:
            raise Unauthorized("the callback URL's signature is not valid", code="InvalidSignature")

    @staticmethod
    def _sign(key: bytes, kind: str, parts: tuple[str, ...], params: Mapping[str, str]) -> str:
        # Length-prefixing every field makes the encoding unambiguous: no choice of names
        # can make two different URLs produce the same canonical string.
        fields = [kind, *parts, *(f"{k}={v}" for k, v in sorted(params.items()))]
        canonical = "".join(f"{len(f.encode())}:{f}\n" for f in fields)
        digest = hmac.new(key, canonical.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def redact_url(url: str) -> str:
    """A callback URL fit for logs and stored inputs: the signature replaced by ``***``."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [p if not p.startswith("sig=") else "sig=***" for p in query.split("&")]
    return head + "?" + "&".join(kept)
