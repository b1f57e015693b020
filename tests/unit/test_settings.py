"""Settings.from_env validation, and the two ways it builds the Table service client.

Nothing here touches the network: environments are plain dicts, and building a client or a
credential only parses configuration (a fixture refuses any socket to prove it).
"""

from __future__ import annotations

import base64
import socket
from datetime import timedelta
from typing import Any

import azure.identity
import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from shared.errors import ConfigurationError
from shared.settings import _MAX_BODY_LIMIT, SETTINGS, Settings, SettingSpec

KEY = "unit-test-signing-key-0123456789"
OLD_KEY = "unit-test-old-signing-key-abcdef"
AZURITE = "UseDevelopmentStorage=true"
TABLE_URI = "https://hookflowacct.table.core.windows.net"
CLIENT_ID = "00000000-0000-0000-0000-000000000001"


def env(**values: str) -> dict[str, str]:
    """A valid minimal environment (Azurite + one key) with ``values`` laid over it."""
    return {"AzureWebJobsStorage": AZURITE, "HOOKFLOW_SIGNING_KEYS": KEY} | values


def identity_env(**values: str) -> dict[str, str]:
    """An Azure-like environment: table endpoint + user-assigned managed identity, no connection string."""
    return {
        "AzureWebJobsStorage__tableServiceUri": TABLE_URI,
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": CLIENT_ID,
        "HOOKFLOW_SIGNING_KEYS": KEY,
    } | values


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to resolve a name or open a connection."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a settings test tried to reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def identity_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the arguments ManagedIdentityCredential is built with (it stays the real class)."""
    calls: list[dict[str, Any]] = []

    class RecordingManagedIdentityCredential(ManagedIdentityCredential):
        def __init__(self, **kwargs: Any) -> None:
            calls.append(dict(kwargs))
            super().__init__(**kwargs)

    # settings.py imports azure.identity names when it builds the client, so this is what it gets.
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", RecordingManagedIdentityCredential)
    return calls


class TestDefaults:
    """Unset and blank settings take the defaults declared in SETTINGS."""

    def test_minimal_environment(self) -> None:
        """Storage and one key are enough; everything else has a default."""
        settings = Settings.from_env(env())
        assert settings.storage_connection_string == AZURITE
        assert settings.table_service_uri is None
        assert settings.table_prefix == "hookflow"
        assert settings.signing_keys == (KEY.encode(),)
        assert settings.public_base_url == ""
        assert settings.http_timeout == timedelta(seconds=120)
        assert settings.max_body_bytes == 1048576
        assert settings.allow_private_network is False

    @pytest.mark.parametrize("spec", [s for s in SETTINGS if s.default is not None], ids=lambda s: s.name)
    def test_blank_value_means_default(self, spec: SettingSpec) -> None:
        """A setting present but blank (as azd and the local sample leave them) acts as unset."""
        assert Settings.from_env(env(**{spec.name: "   "})) == Settings.from_env(env())

    def test_values_are_trimmed(self) -> None:
        """Surrounding whitespace, common in portal-edited settings, is ignored."""
        settings = Settings.from_env(env(HOOKFLOW_TABLE_PREFIX="  runs1  ", HOOKFLOW_HTTP_TIMEOUT=" PT30S "))
        assert (settings.table_prefix, settings.http_timeout) == ("runs1", timedelta(seconds=30))

    def test_reads_os_environ_when_no_mapping_is_given(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """from_env() without an argument reads the process environment."""
        for spec in SETTINGS:
            monkeypatch.delenv(spec.name, raising=False)
        for name, value in env(HOOKFLOW_TABLE_PREFIX="fromenviron").items():
            monkeypatch.setenv(name, value)
        assert Settings.from_env().table_prefix == "fromenviron"


class TestTablePrefix:
    """HOOKFLOW_TABLE_PREFIX must make valid table names."""

    @pytest.mark.parametrize("prefix", ["a", "hookflow", "Runs2", "x" * 40])
    def test_accepted(self, prefix: str) -> None:
        """Letters then letters or digits, up to 40 characters."""
        assert Settings.from_env(env(HOOKFLOW_TABLE_PREFIX=prefix)).table_prefix == prefix

    @pytest.mark.parametrize("prefix", ["1runs", "hook-flow", "hook_flow", "hook flow", "x" * 41, "häkchen"])
    def test_rejected(self, prefix: str) -> None:
        """A digit first, punctuation, spaces, non-ASCII letters or more than 40 characters are refused."""
        with pytest.raises(ConfigurationError, match="HOOKFLOW_TABLE_PREFIX"):
            Settings.from_env(env(HOOKFLOW_TABLE_PREFIX=prefix))


class TestSigningKeys:
    """HOOKFLOW_SIGNING_KEYS holds one or more keys; the first signs."""

    @pytest.mark.parametrize("value", [None, "", "   ", ",", " , , "])
    def test_missing_keys_are_refused(self, value: str | None) -> None:
        """Without a key no callback URL could be signed, so the app refuses to start."""
        values = env()
        if value is None:
            del values["HOOKFLOW_SIGNING_KEYS"]
        else:
            values["HOOKFLOW_SIGNING_KEYS"] = value
        with pytest.raises(ConfigurationError, match="HOOKFLOW_SIGNING_KEYS is not set"):
            Settings.from_env(values)

    def test_short_key_is_refused(self) -> None:
        """Every key, old ones included, needs at least 16 characters."""
        with pytest.raises(ConfigurationError, match="at least 16"):
            Settings.from_env(env(HOOKFLOW_SIGNING_KEYS=f"{KEY},short-old-key"))

    def test_sixteen_characters_is_enough(self) -> None:
        """The boundary: exactly 16 characters is accepted."""
        assert Settings.from_env(env(HOOKFLOW_SIGNING_KEYS="k" * 16)).signing_keys == (b"k" * 16,)

    def test_rotation_order_is_kept(self) -> None:
        """new,old keeps the new key first (it signs) and the old one for verifying; blanks are dropped."""
        settings = Settings.from_env(env(HOOKFLOW_SIGNING_KEYS=f" {KEY} ,, {OLD_KEY} "))
        assert settings.signing_keys == (KEY.encode(), OLD_KEY.encode())


class TestPublicBaseUrl:
    """HOOKFLOW_PUBLIC_BASE_URL is an http(s) URL without a trailing slash."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("https://hookflow.azurewebsites.net/", "https://hookflow.azurewebsites.net"),
            ("http://127.0.0.1:7071", "http://127.0.0.1:7071"),
            ("", ""),
        ],
    )
    def test_accepted(self, value: str, expected: str) -> None:
        """Trailing slashes are dropped so callback paths join cleanly."""
        assert Settings.from_env(env(HOOKFLOW_PUBLIC_BASE_URL=value)).public_base_url == expected

    @pytest.mark.parametrize("value", ["hookflow.azurewebsites.net", "ftp://host", "//host"])
    def test_rejected(self, value: str) -> None:
        """Anything but an absolute http(s) URL is refused."""
        with pytest.raises(ConfigurationError, match="HOOKFLOW_PUBLIC_BASE_URL"):
            Settings.from_env(env(HOOKFLOW_PUBLIC_BASE_URL=value))


class TestHttpTimeout:
    """HOOKFLOW_HTTP_TIMEOUT is a positive ISO 8601 duration."""

    @pytest.mark.parametrize(("value", "seconds"), [("PT30S", 30), ("PT2M", 120), ("pt1.5s", 1.5)])
    def test_accepted(self, value: str, seconds: float) -> None:
        """ISO 8601 durations, in either case, are parsed."""
        assert Settings.from_env(env(HOOKFLOW_HTTP_TIMEOUT=value)).http_timeout == timedelta(seconds=seconds)

    @pytest.mark.parametrize(
        ("value", "reason"), [("30", "ISO 8601"), ("30s", "ISO 8601"), ("PT0S", "longer than zero")]
    )
    def test_rejected(self, value: str, reason: str) -> None:
        """A bare number, a non-ISO unit or a zero duration is refused, naming the setting."""
        with pytest.raises(ConfigurationError, match=f"HOOKFLOW_HTTP_TIMEOUT.*{reason}"):
            Settings.from_env(env(HOOKFLOW_HTTP_TIMEOUT=value))


class TestWorkflowCache:
    """HOOKFLOW_WORKFLOW_CACHE is an ISO 8601 duration; zero turns the reuse off."""

    @pytest.mark.parametrize(("value", "seconds"), [("", 5), ("PT0S", 0), ("PT1M", 60)])
    def test_accepted(self, value: str, seconds: float) -> None:
        assert Settings.from_env(env(HOOKFLOW_WORKFLOW_CACHE=value)).workflow_cache == timedelta(seconds=seconds)

    @pytest.mark.parametrize("value", ["5", "-PT5S", "soon"])
    def test_rejected(self, value: str) -> None:
        with pytest.raises(ConfigurationError, match="HOOKFLOW_WORKFLOW_CACHE"):
            Settings.from_env(env(HOOKFLOW_WORKFLOW_CACHE=value))


class TestMaxBodyBytes:
    """HOOKFLOW_MAX_BODY_BYTES is a whole number between 1 and the storage-imposed ceiling."""

    @pytest.mark.parametrize("value", [1, 1048576, _MAX_BODY_LIMIT])
    def test_accepted(self, value: int) -> None:
        """The bounds themselves are allowed."""
        assert Settings.from_env(env(HOOKFLOW_MAX_BODY_BYTES=str(value))).max_body_bytes == value

    @pytest.mark.parametrize(
        ("value", "reason"), [("1MB", "whole number"), ("1.5", "whole number"), ("0", "between"), ("-1", "between")]
    )
    def test_rejected(self, value: str, reason: str) -> None:
        """Units, fractions, zero and negatives are refused."""
        with pytest.raises(ConfigurationError, match=f"HOOKFLOW_MAX_BODY_BYTES.*{reason}"):
            Settings.from_env(env(HOOKFLOW_MAX_BODY_BYTES=value))

    def test_above_ceiling_is_rejected(self) -> None:
        """One byte over the ceiling is refused."""
        with pytest.raises(ConfigurationError, match="HOOKFLOW_MAX_BODY_BYTES"):
            Settings.from_env(env(HOOKFLOW_MAX_BODY_BYTES=str(_MAX_BODY_LIMIT + 1)))


class TestAllowPrivateNetwork:
    """HOOKFLOW_ALLOW_PRIVATE_NETWORK is a boolean, off unless said otherwise."""

    @pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("1", True), ("yes", True)])
    def test_true_values(self, value: str, expected: bool) -> None:
        """true, 1 and yes (any case) turn the SSRF guard off."""
        assert Settings.from_env(env(HOOKFLOW_ALLOW_PRIVATE_NETWORK=value)).allow_private_network is expected

    @pytest.mark.parametrize("value", ["false", "False", "0", "no"])
    def test_false_values(self, value: str) -> None:
        """false, 0 and no keep the guard on."""
        assert Settings.from_env(env(HOOKFLOW_ALLOW_PRIVATE_NETWORK=value)).allow_private_network is False

    def test_other_values_are_refused(self) -> None:
        """An unrecognised word is an error, not silently false."""
        with pytest.raises(ConfigurationError, match="HOOKFLOW_ALLOW_PRIVATE_NETWORK must be true or false"):
            Settings.from_env(env(HOOKFLOW_ALLOW_PRIVATE_NETWORK="maybe"))


class TestStorageConfiguration:
    """Storage is configured by a connection string or by a table endpoint."""

    def test_neither_is_refused(self) -> None:
        """With no connection string and no endpoint there is nowhere to keep runs."""
        values = env()
        del values["AzureWebJobsStorage"]
        with pytest.raises(ConfigurationError, match="storage is not configured"):
            Settings.from_env(values)

    def test_identity_settings_are_read(self) -> None:
        """Endpoint, credential kind and client id are kept as given."""
        settings = Settings.from_env(identity_env())
        assert settings.storage_connection_string is None
        assert (settings.table_service_uri, settings.storage_credential, settings.storage_client_id) == (
            TABLE_URI,
            "managedidentity",
            CLIENT_ID,
        )


@pytest.mark.usefixtures("no_network")
class TestTableServiceClient:
    """table_service_client() picks the connection string, else the endpoint with an identity."""

    def test_network_is_refused_here(self) -> None:
        """The guard is in place, so the tests below would fail on any network call."""
        with pytest.raises(AssertionError, match="network"):
            socket.getaddrinfo("hookflowacct.table.core.windows.net", 443)

    def test_azurite_connection_string(self) -> None:
        """UseDevelopmentStorage=true points at Azurite's table endpoint with its well-known account."""
        client = Settings.from_env(env()).table_service_client()
        assert client.account_name == "devstoreaccount1"
        assert client.url == "http://127.0.0.1:10002/devstoreaccount1"
        assert isinstance(client.credential, AzureNamedKeyCredential)

    def test_account_connection_string(self) -> None:
        """A full connection string gives the account's endpoint and a named-key credential."""
        # Built at run time: an all-zero key, so no key-shaped literal sits in the repository.
        key = base64.b64encode(bytes(64)).decode()
        connection = (
            f"DefaultEndpointsProtocol=https;AccountName=hookflowacct;AccountKey={key};EndpointSuffix=core.windows.net"
        )
        client = Settings.from_env(env(AzureWebJobsStorage=connection)).table_service_client()
        assert client.account_name == "hookflowacct"
        assert client.url == TABLE_URI
        assert isinstance(client.credential, AzureNamedKeyCredential)
        assert client.credential.named_key.name == "hookflowacct"

    def test_user_assigned_managed_identity(self, identity_calls: list[dict[str, Any]]) -> None:
        """Endpoint + credential=managedidentity + clientId gives a ManagedIdentityCredential for that client id."""
        client = Settings.from_env(identity_env()).table_service_client()
        assert client.account_name == "hookflowacct"
        assert client.url == TABLE_URI
        assert isinstance(client.credential, ManagedIdentityCredential)
        assert identity_calls == [{"client_id": CLIENT_ID}]

    def test_endpoint_with_trailing_slash(self) -> None:
        """Bicep's primaryEndpoints.table ends with a slash; the client accepts it as is."""
        client = Settings.from_env(
            identity_env(AzureWebJobsStorage__tableServiceUri=f"{TABLE_URI}/")
        ).table_service_client()
        assert (client.account_name, client.url) == ("hookflowacct", TABLE_URI)

    def test_system_assigned_managed_identity(self, identity_calls: list[dict[str, Any]]) -> None:
        """Without a client id the system-assigned identity is used; the credential name is case-insensitive."""
        values = identity_env(AzureWebJobsStorage__credential="ManagedIdentity")
        del values["AzureWebJobsStorage__clientId"]
        client = Settings.from_env(values).table_service_client()
        assert isinstance(client.credential, ManagedIdentityCredential)
        assert identity_calls == [{}]

    def test_developer_sign_in_without_named_credential(self) -> None:
        """An endpoint with no credential setting falls back to DefaultAzureCredential (az login and friends)."""
        values = identity_env()
        del values["AzureWebJobsStorage__credential"]
        client = Settings.from_env(values).table_service_client()
        assert isinstance(client.credential, DefaultAzureCredential)

    def test_connection_string_wins_over_endpoint(self, identity_calls: list[dict[str, Any]]) -> None:
        """When both are set (a local override of Azure settings) the connection string is used."""
        client = Settings.from_env(identity_env(AzureWebJobsStorage=AZURITE)).table_service_client()
        assert client.account_name == "devstoreaccount1"
        assert identity_calls == []
