"""Receivers: verifiers for signed inbound webhooks, in the sense of ASP.NET WebHooks.

A workflow trigger or a webhook action may declare how the callbacks it receives are signed.
The definition names the scheme and the *app setting* that holds the secret, never the secret::

    {"scheme": "github", "secretSetting": "GITHUB_WEBHOOK_SECRET"}

Schemes and the headers they read (header names are matched in any case):

``github``
    ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``; the delivery id is
    ``X-GitHub-Delivery`` (GitHub keeps it on redelivery).
``standardWebhooks``
    ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``: space-separated
    ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` entries (several during a key
    rotation; entries of other versions are ignored). Secrets are ``whsec_<base64>`` (the bare
    base64 is accepted too). The timestamp must lie within a tolerance (5 minutes by default)
    either side of now. The delivery id is ``webhook-id``.
``hmac``
    One configured header holding ``prefix + hex-or-base64 HMAC`` (SHA-1, SHA-256 or SHA-512)
    of the raw body; the delivery id comes from an optional configured id header.

Every failure raises :class:`~shared.errors.Unauthorized` (401) with one of the codes
``MissingSignature``, ``InvalidSignature`` or ``TimestampOutOfTolerance``. Messages name
headers, never secrets or signature values. Signatures are always computed over the raw body
bytes as received: re-serialising JSON would change them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.durations import parse_duration
from shared.errors import ConfigurationError, Unauthorized

MISSING_SIGNATURE = "MissingSignature"
INVALID_SIGNATURE = "InvalidSignature"
TIMESTAMP_OUT_OF_TOLERANCE = "TimestampOutOfTolerance"

GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
GITHUB_DELIVERY_HEADER = "X-GitHub-Delivery"
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
WHSEC_PREFIX = "whsec_"
DEFAULT_TOLERANCE = timedelta(minutes=5)

Algorithm = Literal["sha256", "sha1", "sha512"]
Encoding = Literal["hex", "base64"]

_ALGORITHMS = ("sha1", "sha256", "sha512")
_ENCODINGS = ("hex", "base64")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Whole unix seconds; twelve digits reach well past the year 30000 and keep timedelta in range.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# RFC 9110 field-name token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_SECRET_SEPARATORS = re.compile(r"[\s,]+")


class SignatureScheme(StrEnum):
    """How an inbound webhook proves where it comes from."""

    GITHUB = "github"
    STANDARD_WEBHOOKS = "standardWebhooks"
    HMAC = "hmac"


@dataclass(frozen=True)
class Verified:
    """What a successful verification tells the caller.

    ``delivery_id`` is the sender's id for the delivery (kept on redelivery), used to
    de-duplicate; ``None`` when the scheme has none or the sender did not send one.
    """

    delivery_id: str | None


class Receiver(Protocol):
    """Verifies one inbound request; raises :class:`Unauthorized` when it is not authentic."""

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Verified: ...


# --------------------------------------------------------------------------- signing


def sign_github(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``webhook-signature`` entry, ``v1,<base64>``, for a message signed with ``secret``.

    ``secret`` is ``whsec_<base64>`` or the bare base64; raise ``ValueError`` when it is not.
    """
    key = _standard_webhooks_key(secret)
    digest = hmac.new(key, _standard_webhooks_content(msg_id, str(timestamp), body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _standard_webhooks_key(secret: str) -> bytes:
    text = secret.strip()
    text = text.removeprefix(WHSEC_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # The secret itself is never part of the message.
        raise ValueError("a Standard Webhooks secret is not 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("a Standard Webhooks secret is empty")
    return key


def _standard_webhooks_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


# --------------------------------------------------------------------------- receivers


def github(secret: bytes) -> Receiver:
    """A receiver for GitHub webhooks (``X-Hub-Signature-256``, delivery id ``X-GitHub-Delivery``)."""
    return hmac_header(secret, header=GITHUB_SIGNATURE_HEADER, prefix="sha256=", id_header=GITHUB_DELIVERY_HEADER)


def standard_webhooks(secrets: Sequence[str], tolerance: timedelta = DEFAULT_TOLERANCE) -> Receiver:
    """A receiver for Standard Webhooks; any of ``secrets`` may have signed (key rotation).

    Raise ``ValueError`` when no secret is given, one is not base64, or the tolerance is negative.
    """
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not one string")
    if not secrets:
        raise ValueError("at least one Standard Webhooks secret is needed")
    if tolerance < timedelta(0):
        raise ValueError("the timestamp tolerance cannot be negative")
    keys = tuple(_standard_webhooks_key(secret) for secret in secrets)
    return _StandardWebhooksReceiver(keys=keys, tolerance=tolerance)


def hmac_header(
    secret: bytes,
    *,
    header: str,
    algorithm: str = "sha256",
    encoding: str = "hex",
    prefix: str = "",
    id_header: str | None = None,
) -> Receiver:
    """A receiver for a signature in one header: ``prefix`` + hex or base64 HMAC of the raw body."""
    if not secret:
        raise ValueError("the HMAC secret is empty")
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(_ALGORITHMS)}")
    if encoding not in _ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(_ENCODINGS)}")
    if not _HEADER_NAME.fullmatch(header):
        raise ValueError("the signature header is not a valid header name")
    if id_header is not None and not _HEADER_NAME.fullmatch(id_header):
        raise ValueError("the id header is not a valid header name")
    return _HmacHeaderReceiver(
        secret=secret,
        header=header,
        algorithm=algorithm,
        encoding=encoding,
        prefix=prefix,
        id_header=id_header,
    )


@dataclass(frozen=True)
class _HmacHeaderReceiver:
    secret: bytes = field(repr=False)
    header: str
    algorithm: str
    encoding: str
    prefix: str
    id_header: str | None

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Verified:
        lowered = _lower_keys(headers)
        given = _header(lowered, self.header)
        if given is None:
            raise Unauthorized(f"the request has no {self.header} header", code=MISSING_SIGNATURE)
        if not given.startswith(self.prefix):
            raise Unauthorized(f"the {self.header} header does not have the expected form", code=INVALID_SIGNATURE)
        signature = _decode(given[len(self.prefix) :], self.encoding)
        expected = hmac.new(self.secret, body, self.algorithm).digest()
        if signature is None or not hmac.compare_digest(expected, signature):
            raise Unauthorized(f"the {self.header} signature is not valid", code=INVALID_SIGNATURE)
        return Verified(delivery_id=_header(lowered, self.id_header) if self.id_header else None)


@dataclass(frozen=True)
class _StandardWebhooksReceiver:
    keys: tuple[bytes, ...] = field(repr=False)
    tolerance: timedelta

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> Verified:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        lowered = _lower_keys(headers)
        msg_id = _required_header(lowered, WEBHOOK_ID_HEADER)
        timestamp = _required_header(lowered, WEBHOOK_TIMESTAMP_HEADER)
        signatures = _required_header(lowered, WEBHOOK_SIGNATURE_HEADER)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise Unauthorized(
                f"the {WEBHOOK_TIMESTAMP_HEADER} header is not a whole number of unix seconds",
                code=INVALID_SIGNATURE,
            )

        # The signature is checked before the timestamp, so that TimestampOutOfTolerance is only
        # ever said of a genuine (replayed or clock-skewed) message, and a forger learns nothing.
        content = _standard_webhooks_content(msg_id, timestamp, body)
        expected = [hmac.new(key, content, hashlib.sha256).digest() for key in self.keys]
        given = [_decode(sig, "base64") for version, _, sig in _entries(signatures) if version == "v1"]
        # Compare every entry with every key, without stopping early, so that timing says
        # nothing about which entry or key (if any) matched.
        matched = False
        for candidate in given:
            for digest in expected:
                matched |= candidate is not None and hmac.compare_digest(digest, candidate)
        if not matched:
            raise Unauthorized(f"no {WEBHOOK_SIGNATURE_HEADER} entry is a valid v1 signature", code=INVALID_SIGNATURE)

        skew = (now - _EPOCH) - timedelta(seconds=int(timestamp))
        if abs(skew) > self.tolerance:
            raise Unauthorized(
                f"the {WEBHOOK_TIMESTAMP_HEADER} header is more than {int(self.tolerance.total_seconds())} s "
                "away from the receiver's clock",
                code=TIMESTAMP_OUT_OF_TOLERANCE,
            )
        return Verified(delivery_id=msg_id)


def _entries(header: str) -> list[tuple[str, str, str]]:
    """``v1,abc v2,def`` taken apart as ``(version, ",", signature)`` triples."""
    return [entry.partition(",") for entry in header.split()]


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _header(lowered: Mapping[str, str], name: str) -> str | None:
    """A header's value, stripped; ``None`` when it is absent or blank."""
    value = lowered.get(name.lower())
    if value is None:
        return None
    value = value.strip()
    return value or None


def _required_header(lowered: Mapping[str, str], name: str) -> str:
    value = _header(lowered, name)
    if value is None:
        raise Unauthorized(f"the request has no {name} header", code=MISSING_SIGNATURE)
    return value


def _decode(text: str, encoding: str) -> bytes | None:
    """Hex (either case) or standard base64 to bytes; ``None`` when the text is not that."""
    if encoding == "hex":
        return bytes.fromhex(text) if _HEX.fullmatch(text) else None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# --------------------------------------------------------------------------- definitions


class SignatureSpec(BaseModel):
    """How a trigger's or action's inbound callbacks are signed, as a definition declares it.

    ``secretSetting`` is the *name* of the app setting holding the secret; the secret itself
    never appears in a definition.
    """

    # hide_input_in_errors: should someone paste a secret where a setting name belongs, the
    # validation error must not repeat it.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    scheme: SignatureScheme
    secret_setting: str = Field(alias="secretSetting")
    header: str | None = None
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    id_header: str | None = Field(default=None, alias="idHeader")
    tolerance: str | None = None

    @field_validator("scheme", mode="before")
    @classmethod
    def _canonical_scheme(cls, value: Any) -> Any:
        if isinstance(value, str):
            folded = value.replace("-", "").replace("_", "").lower()
            for scheme in SignatureScheme:
                if folded == scheme.value.lower():
                    return scheme
        return value

    @field_validator("secret_setting")
    @classmethod
    def _setting_name(cls, value: str) -> str:
        if value.lower().startswith(WHSEC_PREFIX) or not _SETTING_NAME.fullmatch(value):
            raise ValueError(
                "secretSetting must be the name of an app setting (letters, digits and '_', "
                "not starting with a digit), not the secret itself"
            )
        return value

    @field_validator("header", "id_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError("must be an HTTP header name")
        return value

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if parse_duration(value) <= timedelta(0):
            raise ValueError("tolerance must be longer than zero")
        return value

    @model_validator(mode="after")
    def _fields_fit_the_scheme(self) -> SignatureSpec:
        if self.scheme is SignatureScheme.HMAC and self.header is None:
            raise ValueError("the hmac scheme needs 'header', the header that carries the signature")
        if self.scheme is not SignatureScheme.HMAC:
            hmac_only = {"header", "algorithm", "encoding", "prefix", "id_header"} & self.model_fields_set
            if hmac_only:
                names = ", ".join(sorted(self._alias(name) for name in hmac_only))
                raise ValueError(f"{names} only apply to the hmac scheme")
        if self.scheme is not SignatureScheme.STANDARD_WEBHOOKS and self.tolerance is not None:
            raise ValueError("'tolerance' only applies to the standardWebhooks scheme")
        return self

    @classmethod
    def _alias(cls, name: str) -> str:
        return f"'{cls.model_fields[name].alias or name}'"


def build_receiver(spec: SignatureSpec, env: Mapping[str, str]) -> Receiver:
    """The receiver a spec describes, with its secret read from the app setting it names.

    Raise :class:`ConfigurationError` naming the setting (never its value) when the setting is
    missing, empty or malformed. For ``standardWebhooks`` the setting may hold several secrets
    separated by spaces or commas, so that a new secret can be added before the old one goes.
    """
    name = spec.secret_setting
    value = env.get(name)
    if value is None or not value.strip():
        raise ConfigurationError(f"the app setting {name} is not set; it must hold the {spec.scheme} webhook secret")
    if spec.scheme is SignatureScheme.GITHUB:
        return github(value.encode())
    if spec.scheme is SignatureScheme.STANDARD_WEBHOOKS:
        tolerance = parse_duration(spec.tolerance) if spec.tolerance else DEFAULT_TOLERANCE
        try:
            return standard_webhooks([s for s in _SECRET_SEPARATORS.split(value) if s], tolerance)
        except ValueError:
            raise ConfigurationError(
                f"the app setting {name} must hold one or more Standard Webhooks secrets "
                "('whsec_' followed by base64), separated by spaces or commas"
            ) from None
    assert spec.header is not None  # the model validator makes sure
    return hmac_header(
        value.encode(),
        header=spec.header,
        algorithm=spec.algorithm,
        encoding=spec.encoding,
        prefix=spec.prefix,
        id_header=spec.id_header,
    )
