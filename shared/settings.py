"""The one place that reads the environment.

Every setting Hookflow reads is declared in :data:`SETTINGS`, with its default and where it
must be provided: ``local`` settings appear in ``local.settings.sample.json``, ``azure``
settings in the Bicep app settings (``infra/``). A test keeps the three in agreement, so a
new setting is added here first and then in both other places.

Storage is reached one of two ways (DESIGN.md section 5):

* a connection string in ``AzureWebJobsStorage`` (``UseDevelopmentStorage=true`` for
  Azurite), or
* ``AzureWebJobsStorage__tableServiceUri`` with a managed identity
  (``AzureWebJobsStorage__credential=managedidentity`` and, for a user-assigned identity,
  ``AzureWebJobsStorage__clientId``), the identity-based connection the Functions host uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from shared.durations import parse_duration
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient

Scope = Literal["local", "azure", "both"]


@dataclass(frozen=True)
class SettingSpec:
    """A setting the app reads: its name, default (``None`` = no default) and scope."""

    name: str
    default: str | None
    scope: Scope
    secret: bool = False
    doc: str = ""


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "AzureWebJobsStorage",
        None,
        "local",
        secret=True,
        doc="Storage connection string; `UseDevelopmentStorage=true` for Azurite.",
    ),
    SettingSpec(
        "AzureWebJobsStorage__tableServiceUri",
        None,
        "azure",
        doc="Table endpoint used with a managed identity, e.g. `https://<account>.table.core.windows.net`.",
    ),
    SettingSpec(
        "AzureWebJobsStorage__credential",
        None,
        "azure",
        doc="`managedidentity` to authenticate to storage with the app's managed identity.",
    ),
    SettingSpec(
        "AzureWebJobsStorage__clientId",
        None,
        "azure",
        doc="Client id of the user-assigned managed identity.",
    ),
    SettingSpec(
        "HOOKFLOW_TABLE_PREFIX",
        "hookflow",
        "both",
        doc="Prefix of Hookflow's table names (letters and digits); lets several installs share an account.",
    ),
    SettingSpec(
        "HOOKFLOW_SIGNING_KEYS",
        None,
        "both",
        secret=True,
        doc="Comma-separated callback URL signing keys: the first signs, all verify (rotation).",
    ),
    SettingSpec(
        "HOOKFLOW_PUBLIC_BASE_URL",
        "",
        "both",
        doc="Base URL put in callback URLs, e.g. `https://myapp.azurewebsites.net`; empty = the request's own.",
    ),
    SettingSpec(
        "HOOKFLOW_HTTP_TIMEOUT",
        "PT120S",
        "both",
        doc="Timeout of each outbound HTTP request (ISO 8601 duration).",
    ),
    SettingSpec(
        "HOOKFLOW_MAX_BODY_BYTES",
        "1048576",
        "both",
        doc="Largest inbound body (trigger or callback) and outbound response body accepted, in bytes.",
    ),
    SettingSpec(
        "HOOKFLOW_MAX_WAIT",
        "P90D",
        "both",
        doc="Longest a webhook action waits when it has no `limit.timeout` of its own (ISO 8601).",
    ),
    SettingSpec(
        "HOOKFLOW_POLL_SCHEDULE",
        "*/5 * * * * *",
        "both",
        doc="NCRONTAB schedule of the timer that sweeps due work (timeouts, polls, retries, delays).",
    ),
    SettingSpec(
        "HOOKFLOW_WORKFLOW_CACHE",
        "PT5S",
        "both",
        doc="How long an instance starts runs from a workflow it read before reading it again (ISO 8601; "
        "`PT0S` = every start reads it). Changes take effect at once on the instance that made them, "
        "on the others within this time.",
    ),
    SettingSpec(
        "HOOKFLOW_ALLOW_PRIVATE_NETWORK",
        "false",
        "both",
        doc="`true` lets actions call loopback and private addresses (local development); "
        "`false` blocks them (SSRF guard).",
    ),
)

_BY_NAME = {spec.name: spec for spec in SETTINGS}

# Entity-group transactions and property sizes cap what one run can hold; a body limit far
# above this would only move the failure from the front door to the storage write.
_MAX_BODY_LIMIT = 2 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Typed, validated settings. Build with :meth:`from_env`."""

    storage_connection_string: str | None
    table_service_uri: str | None
    storage_credential: str | None
    storage_client_id: str | None
    table_prefix: str
    signing_keys: tuple[bytes, ...]
    public_base_url: str
    http_timeout: timedelta
    max_body_bytes: int
    allow_private_network: bool
    max_wait: timedelta
    poll_schedule: str
    workflow_cache: timedelta

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise :class:`ConfigurationError` naming the bad one."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            raw = source.get(name)
            if raw is None or raw.strip() == "":
                return _BY_NAME[name].default
            return raw.strip()

        prefix = get("HOOKFLOW_TABLE_PREFIX") or ""
        if not (prefix.isascii() and prefix.isalnum() and prefix[:1].isalpha() and len(prefix) <= 40):
            raise ConfigurationError(
                "HOOKFLOW_TABLE_PREFIX must start with a letter and hold only letters and digits (at most 40)"
            )

        keys = tuple(k.strip().encode() for k in (get("HOOKFLOW_SIGNING_KEYS") or "").split(",") if k.strip())
        if not keys:
            raise ConfigurationError(
                "HOOKFLOW_SIGNING_KEYS is not set: give at least one random key of 16 or more characters (32+ advised)"
            )
        if any(len(k) < 16 for k in keys):
            raise ConfigurationError("every key in HOOKFLOW_SIGNING_KEYS must be at least 16 characters long")

        base = (get("HOOKFLOW_PUBLIC_BASE_URL") or "").rstrip("/")
        if base and not base.startswith(("http://", "https://")):
            raise ConfigurationError("HOOKFLOW_PUBLIC_BASE_URL must start with http:// or https://")

        timeout = _duration(get, "HOOKFLOW_HTTP_TIMEOUT")
        max_body = _int(get, "HOOKFLOW_MAX_BODY_BYTES")
        if not 1 <= max_body <= _MAX_BODY_LIMIT:
            raise ConfigurationError(f"HOOKFLOW_MAX_BODY_BYTES must be between 1 and {_MAX_BODY_LIMIT}")

        settings = cls(
            storage_connection_string=get("AzureWebJobsStorage"),
            table_service_uri=get("AzureWebJobsStorage__tableServiceUri"),
            storage_credential=get("AzureWebJobsStorage__credential"),
            storage_client_id=get("AzureWebJobsStorage__clientId"),
            table_prefix=prefix,
            signing_keys=keys,
            public_base_url=base,
            http_timeout=timeout,
            max_body_bytes=max_body,
            allow_private_network=_bool(get, "HOOKFLOW_ALLOW_PRIVATE_NETWORK"),
            max_wait=_duration(get, "HOOKFLOW_MAX_WAIT"),
            poll_schedule=_schedule(get, "HOOKFLOW_POLL_SCHEDULE"),
            workflow_cache=_duration(get, "HOOKFLOW_WORKFLOW_CACHE", zero_ok=True),
        )
        if not settings.storage_connection_string and not settings.table_service_uri:
            raise ConfigurationError(
                "storage is not configured: set AzureWebJobsStorage (a connection string) "
                "or AzureWebJobsStorage__tableServiceUri (with a managed identity)"
            )
        return settings

    def table_service_client(self) -> TableServiceClient:
        """Build the Table service client: connection string first, else URI + identity.

        Builds no connection: the first request is made by whoever uses the client.
        """
        from azure.core.pipeline.transport import RequestsTransport
        from azure.data.tables import TableServiceClient

        from shared.outbound import new_session

        transport = RequestsTransport(session=new_session(), session_owner=False)
        if self.storage_connection_string:
            return TableServiceClient.from_connection_string(self.storage_connection_string, transport=transport)
        assert self.table_service_uri is not None  # from_env guarantees one of the two
        return TableServiceClient(
            endpoint=self.table_service_uri, credential=self._token_credential(), transport=transport
        )

    def _token_credential(self) -> TokenCredential:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        if (self.storage_credential or "").lower() == "managedidentity":
            if self.storage_client_id:
                return ManagedIdentityCredential(client_id=self.storage_client_id)
            return ManagedIdentityCredential()
        # No credential named: the developer's own sign-in (az login, VS Code, env vars).
        return DefaultAzureCredential()


def _duration(get: _Getter, name: str, *, zero_ok: bool = False) -> timedelta:
    raw = get(name) or ""
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an ISO 8601 duration such as PT30S: {exc}") from exc
    if value < timedelta(0) or (value == timedelta(0) and not zero_ok):
        raise ConfigurationError(f"{name} must be {'zero or longer' if zero_ok else 'longer than zero'}")
    return value


def _schedule(get: _Getter, name: str) -> str:
    raw = get(name) or ""
    if len(raw.split()) != 6:
        raise ConfigurationError(
            f"{name} must be a six-field NCRONTAB schedule ({{second}} {{minute}} {{hour}} {{day}} {{month}} "
            f"{{day-of-week}}), for example */5 * * * * *"
        )
    return raw


def _int(get: _Getter, name: str) -> int:
    raw = get(name) or ""
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from exc


def _bool(get: _Getter, name: str) -> bool:
    raw = (get(name) or "").lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no", ""):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


if TYPE_CHECKING:
    from collections.abc import Callable

    _Getter = Callable[[str], str | None]
