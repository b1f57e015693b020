"""Receivers for signed inbound webhooks: GitHub, Standard Webhooks, generic HMAC, and the spec."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shared.errors import ConfigurationError, Unauthorized
from shared.receivers import (
    Receiver,
    SignatureScheme,
    SignatureSpec,
    Verified,
    build_receiver,
    github,
    hmac_header,
    sign_github,
    sign_standard_webhooks,
    standard_webhooks,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

# GitHub's "Validating webhook deliveries" test values.
GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

# The Standard Webhooks reference libraries' signing test vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SW_NOW = datetime.fromtimestamp(SW_TIMESTAMP, UTC)

OTHER_SW_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
GENERIC_SECRET = b"generic-shared-secret"


def refused(receiver: Receiver, headers: dict[str, str], body: bytes, now: datetime = NOW) -> str:
    """Verify a request that must be refused; return the error code."""
    with pytest.raises(Unauthorized) as caught:
        receiver.verify(headers, body, now)
    assert caught.value.status == 401
    return caught.value.code


def sw_headers(
    *, msg_id: str = SW_ID, timestamp: int | str = SW_TIMESTAMP, signature: str = SW_SIGNATURE
) -> dict[str, str]:
    """Standard Webhooks headers, by default those of the reference vector."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def signed_sw(timestamp: int, *, secret: str = SW_SECRET, body: bytes = SW_BODY) -> dict[str, str]:
    """Headers of a message signed at ``timestamp`` with ``secret``."""
    return sw_headers(timestamp=timestamp, signature=sign_standard_webhooks(secret, SW_ID, timestamp, body))


def raw_hmac(body: bytes, algorithm: str = "sha256") -> bytes:
    """The HMAC of ``body`` under the generic secret, computed independently of the module."""
    return hmac.new(GENERIC_SECRET, body, algorithm).digest()


class TestGitHub:
    def test_documented_vector_verifies(self) -> None:
        """GitHub's documented secret, payload and signature are accepted."""
        verified = github(GITHUB_SECRET).verify({"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY, NOW)

        assert verified == Verified(delivery_id=None)

    def test_sign_github_reproduces_the_vector(self) -> None:
        """The public signer produces exactly GitHub's documented header value."""
        assert sign_github(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE

    @pytest.mark.parametrize("name", ["X-GitHub-Delivery", "x-github-delivery", "X-GITHUB-DELIVERY"])
    def test_delivery_id_comes_from_x_github_delivery_in_any_case(self, name: str) -> None:
        """The delivery id is read from X-GitHub-Delivery whatever the header's case."""
        headers = {"x-hub-SIGNATURE-256": GITHUB_SIGNATURE, name: DELIVERY}

        assert github(GITHUB_SECRET).verify(headers, GITHUB_BODY, NOW).delivery_id == DELIVERY

    def test_upper_case_hex_is_accepted(self) -> None:
        """Hex digits are compared as bytes, so their case does not matter."""
        upper = "sha256=" + GITHUB_SIGNATURE.removeprefix("sha256=").upper()

        github(GITHUB_SECRET).verify({"X-Hub-Signature-256": upper}, GITHUB_BODY, NOW)

    def test_tampered_body_is_refused(self) -> None:
        """A body changed by one character no longer matches its signature."""
        code = refused(github(GITHUB_SECRET), {"X-Hub-Signature-256": GITHUB_SIGNATURE}, b"Hello, World?")

        assert code == "InvalidSignature"

    def test_wrong_secret_is_refused(self) -> None:
        """A signature made with another secret is refused."""
        code = refused(github(b"another secret"), {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY)

        assert code == "InvalidSignature"

    def test_missing_header_is_refused(self) -> None:
        """A request without X-Hub-Signature-256 is refused as unsigned."""
        code = refused(github(GITHUB_SECRET), {"X-GitHub-Delivery": DELIVERY}, GITHUB_BODY)

        assert code == "MissingSignature"

    def test_empty_header_counts_as_missing(self) -> None:
        """A blank X-Hub-Signature-256 header is treated as no signature at all."""
        assert refused(github(GITHUB_SECRET), {"X-Hub-Signature-256": "  "}, GITHUB_BODY) == "MissingSignature"

    def test_sha1_prefix_is_refused(self) -> None:
        """The legacy ``sha1=`` form is not accepted in X-Hub-Signature-256."""
        legacy = "sha1=" + hmac.new(GITHUB_SECRET, GITHUB_BODY, "sha1").hexdigest()

        assert refused(github(GITHUB_SECRET), {"X-Hub-Signature-256": legacy}, GITHUB_BODY) == "InvalidSignature"

    @pytest.mark.parametrize(
        "value",
        [
            "sha256=not-hex-at-all",
            "sha256=" + "zz" * 32,
            "sha256=757",
            "sha256=",
            GITHUB_SIGNATURE.removeprefix("sha256="),
            "sha256=75 71 07",
            "sha256=é" * 3,
        ],
    )
    def test_malformed_signature_is_refused(self, value: str) -> None:
        """Garbage, truncated, unprefixed or non-ASCII signatures are refused, not crashed on."""
        assert refused(github(GITHUB_SECRET), {"X-Hub-Signature-256": value}, GITHUB_BODY) == "InvalidSignature"

    def test_error_never_contains_the_secret_or_signature(self) -> None:
        """Refusal messages name the header but repeat neither the secret nor any signature."""
        with pytest.raises(Unauthorized) as caught:
            github(GITHUB_SECRET).verify({"X-Hub-Signature-256": GITHUB_SIGNATURE}, b"tampered", NOW)

        text = str(caught.value.to_json())
        assert "X-Hub-Signature-256" in text
        assert GITHUB_SECRET.decode() not in text
        assert GITHUB_SIGNATURE.removeprefix("sha256=") not in text

    def test_receiver_repr_hides_the_secret(self) -> None:
        """Logging a receiver object does not print its secret."""
        assert "Secret" not in repr(github(GITHUB_SECRET))


class TestStandardWebhooks:
    def test_sign_reproduces_the_published_vector(self) -> None:
        """The public signer reproduces the Standard Webhooks reference signature."""
        assert sign_standard_webhooks(SW_SECRET, SW_ID, SW_TIMESTAMP, SW_BODY) == SW_SIGNATURE

    def test_published_vector_verifies(self) -> None:
        """The reference message verifies at its own timestamp and yields webhook-id as the delivery id."""
        verified = standard_webhooks([SW_SECRET]).verify(sw_headers(), SW_BODY, SW_NOW)

        assert verified == Verified(delivery_id=SW_ID)

    def test_headers_match_in_any_case(self) -> None:
        """Header names are looked up case-insensitively."""
        headers = {"Webhook-Id": SW_ID, "WEBHOOK-TIMESTAMP": str(SW_TIMESTAMP), "Webhook-Signature": SW_SIGNATURE}

        assert standard_webhooks([SW_SECRET]).verify(headers, SW_BODY, SW_NOW).delivery_id == SW_ID

    def test_secret_without_prefix_is_accepted(self) -> None:
        """The bare base64 secret, without ``whsec_``, works the same."""
        bare = SW_SECRET.removeprefix("whsec_")

        standard_webhooks([bare]).verify(sw_headers(), SW_BODY, SW_NOW)
        assert sign_standard_webhooks(bare, SW_ID, SW_TIMESTAMP, SW_BODY) == SW_SIGNATURE

    def test_one_valid_signature_among_several_is_accepted(self) -> None:
        """During a rotation the header carries several entries; one valid entry is enough."""
        wrong = sign_standard_webhooks(OTHER_SW_SECRET, SW_ID, SW_TIMESTAMP, SW_BODY)
        header = f"{wrong} v1,bm90IGEgc2lnbmF0dXJl {SW_SIGNATURE} v1,!!!"

        standard_webhooks([SW_SECRET]).verify(sw_headers(signature=header), SW_BODY, SW_NOW)

    def test_message_signed_with_the_second_configured_secret_is_accepted(self) -> None:
        """With several secrets configured, a message signed with any of them verifies."""
        receiver = standard_webhooks([OTHER_SW_SECRET, SW_SECRET])

        assert receiver.verify(sw_headers(), SW_BODY, SW_NOW).delivery_id == SW_ID

    def test_unknown_versions_are_ignored(self) -> None:
        """Entries of other versions are skipped, even when they carry the right bytes."""
        v2_only = SW_SIGNATURE.replace("v1,", "v2,")
        receiver = standard_webhooks([SW_SECRET])

        receiver.verify(sw_headers(signature=f"{v2_only} {SW_SIGNATURE}"), SW_BODY, SW_NOW)
        assert refused(receiver, sw_headers(signature=v2_only), SW_BODY, SW_NOW) == "InvalidSignature"

    @pytest.mark.parametrize("direction", [-1, 1], ids=["past", "future"])
    def test_timestamp_just_outside_tolerance_is_refused(self, direction: int) -> None:
        """A genuine message 5 minutes and 1 second away from now, either way, is refused."""
        timestamp = SW_TIMESTAMP + direction * (5 * 60 + 1)

        assert refused(standard_webhooks([SW_SECRET]), signed_sw(timestamp), SW_BODY, SW_NOW) == (
            "TimestampOutOfTolerance"
        )

    @pytest.mark.parametrize("direction", [-1, 1], ids=["past", "future"])
    def test_timestamp_exactly_at_the_edge_is_accepted(self, direction: int) -> None:
        """A message exactly 5 minutes away from now, either way, is still accepted."""
        timestamp = SW_TIMESTAMP + direction * 5 * 60

        standard_webhooks([SW_SECRET]).verify(signed_sw(timestamp), SW_BODY, SW_NOW)

    def test_configured_tolerance_is_used(self) -> None:
        """A receiver built with a shorter tolerance refuses what the default would accept."""
        receiver = standard_webhooks([SW_SECRET], tolerance=timedelta(seconds=30))

        receiver.verify(signed_sw(SW_TIMESTAMP - 30), SW_BODY, SW_NOW)
        assert refused(receiver, signed_sw(SW_TIMESTAMP - 31), SW_BODY, SW_NOW) == "TimestampOutOfTolerance"

    def test_forged_old_message_is_reported_as_invalid_signature(self) -> None:
        """A bad signature is reported as such even when its timestamp is also stale."""
        headers = sw_headers(timestamp=SW_TIMESTAMP - 3600)

        assert refused(standard_webhooks([SW_SECRET]), headers, SW_BODY, SW_NOW) == "InvalidSignature"

    @pytest.mark.parametrize(
        ("headers", "body"),
        [
            (sw_headers(msg_id="msg_p5jXN8AQM9LWM0D4loKWxJeK"), SW_BODY),
            (sw_headers(timestamp=SW_TIMESTAMP + 1), SW_BODY),
            (sw_headers(), b'{"test": 2432232315}'),
            (sw_headers(), b'{"test":2432232314}'),
        ],
        ids=["id", "timestamp", "body", "reserialised-body"],
    )
    def test_tampering_is_refused(self, headers: dict[str, str], body: bytes) -> None:
        """Changing the id, the timestamp or a single byte of the body breaks the signature."""
        assert refused(standard_webhooks([SW_SECRET]), headers, body, SW_NOW) == "InvalidSignature"

    def test_wrong_secret_is_refused(self) -> None:
        """A receiver holding only another secret refuses the message."""
        assert refused(standard_webhooks([OTHER_SW_SECRET]), sw_headers(), SW_BODY, SW_NOW) == "InvalidSignature"

    @pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
    def test_missing_header_is_refused(self, missing: str) -> None:
        """Each of the three headers is required."""
        headers = sw_headers()
        del headers[missing]

        with pytest.raises(Unauthorized) as caught:
            standard_webhooks([SW_SECRET]).verify(headers, SW_BODY, SW_NOW)
        assert caught.value.code == "MissingSignature"
        assert missing in caught.value.message

    @pytest.mark.parametrize("timestamp", ["hello", "1614265330.5", "-1614265330", "+1614265330", "1_614_265_330"])
    def test_timestamp_that_is_not_an_integer_is_refused(self, timestamp: str) -> None:
        """A timestamp other than plain whole seconds is refused, not parsed leniently."""
        code = refused(standard_webhooks([SW_SECRET]), sw_headers(timestamp=timestamp), SW_BODY, SW_NOW)

        assert code == "InvalidSignature"

    def test_huge_timestamp_is_refused_without_crashing(self) -> None:
        """A timestamp too large for a datetime is refused like any other bad one."""
        code = refused(standard_webhooks([SW_SECRET]), sw_headers(timestamp="9" * 40), SW_BODY, SW_NOW)

        assert code == "InvalidSignature"

    def test_error_never_contains_a_secret_or_signature(self) -> None:
        """Refusal messages repeat neither the secret nor the signatures received."""
        with pytest.raises(Unauthorized) as caught:
            standard_webhooks([SW_SECRET]).verify(sw_headers(), b"tampered", SW_NOW)

        text = str(caught.value.to_json())
        assert SW_SECRET.removeprefix("whsec_") not in text
        assert SW_SIGNATURE.removeprefix("v1,") not in text

    @pytest.mark.parametrize("secrets", [[], ["whsec_not base64!"], ["whsec_"]])
    def test_unusable_secrets_are_refused_at_construction(self, secrets: list[str]) -> None:
        """No secret, a secret that is not base64, or an empty one is a ValueError up front."""
        with pytest.raises(ValueError, match="secret"):
            standard_webhooks(secrets)

    def test_naive_now_is_a_programming_error(self) -> None:
        """A naive ``now`` could be any time zone, so it is refused rather than guessed at."""
        with pytest.raises(ValueError, match="timezone-aware"):
            standard_webhooks([SW_SECRET]).verify(sw_headers(), SW_BODY, SW_NOW.replace(tzinfo=None))


class TestGenericHmac:
    def test_hex_encoding_verifies(self) -> None:
        """A hex HMAC-SHA256 in the configured header is accepted."""
        receiver = hmac_header(GENERIC_SECRET, header="X-Signature")

        receiver.verify({"x-signature": raw_hmac(b"{}").hex()}, b"{}", NOW)

    def test_base64_encoding_verifies(self) -> None:
        """A base64 HMAC is accepted when the receiver is configured for base64."""
        receiver = hmac_header(GENERIC_SECRET, header="X-Signature", encoding="base64")
        value = base64.b64encode(raw_hmac(b"{}")).decode()

        receiver.verify({"X-Signature": value}, b"{}", NOW)
        assert refused(receiver, {"X-Signature": raw_hmac(b"{}").hex()}, b"{}") == "InvalidSignature"

    def test_prefix_is_required_and_stripped(self) -> None:
        """With a prefix configured, the value must start with it and the rest is the HMAC."""
        receiver = hmac_header(GENERIC_SECRET, header="ms-signature", prefix="sha256=")
        digest = raw_hmac(b"payload").hex()

        receiver.verify({"MS-Signature": "sha256=" + digest}, b"payload", NOW)
        assert refused(receiver, {"MS-Signature": digest}, b"payload") == "InvalidSignature"
        assert refused(receiver, {"MS-Signature": "sha512=" + digest}, b"payload") == "InvalidSignature"

    @pytest.mark.parametrize("algorithm", ["sha1", "sha512"])
    def test_other_algorithms_verify(self, algorithm: str) -> None:
        """SHA-1 and SHA-512 HMACs are accepted when configured, and a SHA-256 one is then refused."""
        receiver = hmac_header(GENERIC_SECRET, header="X-Signature", algorithm=algorithm)

        receiver.verify({"X-Signature": raw_hmac(b"body", algorithm).hex()}, b"body", NOW)
        assert refused(receiver, {"X-Signature": raw_hmac(b"body").hex()}, b"body") == "InvalidSignature"

    def test_id_header_gives_the_delivery_id(self) -> None:
        """The configured id header, in any case, becomes the delivery id."""
        receiver = hmac_header(GENERIC_SECRET, header="X-Signature", id_header="X-Delivery-Id")
        headers = {"X-Signature": raw_hmac(b"body").hex(), "x-delivery-id": "d-42"}

        assert receiver.verify(headers, b"body", NOW) == Verified(delivery_id="d-42")

    def test_without_id_header_there_is_no_delivery_id(self) -> None:
        """No id header configured means no delivery id, whatever the request carries."""
        receiver = hmac_header(GENERIC_SECRET, header="X-Signature")
        headers = {"X-Signature": raw_hmac(b"body").hex(), "X-Delivery-Id": "d-42"}

        assert receiver.verify(headers, b"body", NOW).delivery_id is None

    def test_missing_and_invalid_signatures_are_refused(self) -> None:
        """No header is MissingSignature; bad base64 or a tampered body is InvalidSignature."""
        receiver = hmac_header(GENERIC_SECRET, header="X-Signature", encoding="base64")
        good = base64.b64encode(raw_hmac(b"body")).decode()

        assert refused(receiver, {}, b"body") == "MissingSignature"
        assert refused(receiver, {"X-Signature": "%%%"}, b"body") == "InvalidSignature"
        assert refused(receiver, {"X-Signature": good}, b"body!") == "InvalidSignature"

    @pytest.mark.parametrize(
        "make",
        [
            lambda: hmac_header(GENERIC_SECRET, header="X-Signature", algorithm="md5"),
            lambda: hmac_header(GENERIC_SECRET, header="X-Signature", encoding="base32"),
            lambda: hmac_header(GENERIC_SECRET, header="X Signature"),
            lambda: hmac_header(b"", header="X-Signature"),
        ],
        ids=["algorithm", "encoding", "header", "secret"],
    )
    def test_bad_configuration_is_refused(self, make: Callable[[], Receiver]) -> None:
        """An unknown algorithm or encoding, a bad header name or an empty secret is a ValueError."""
        with pytest.raises(ValueError, match=r"."):
            make()


class TestSignatureSpec:
    @pytest.mark.parametrize(
        ("given", "scheme"),
        [
            ("github", SignatureScheme.GITHUB),
            ("GitHub", SignatureScheme.GITHUB),
            ("standardWebhooks", SignatureScheme.STANDARD_WEBHOOKS),
            ("STANDARDWEBHOOKS", SignatureScheme.STANDARD_WEBHOOKS),
            ("standard-webhooks", SignatureScheme.STANDARD_WEBHOOKS),
            ("HMAC", SignatureScheme.HMAC),
        ],
    )
    def test_scheme_is_case_insensitive(self, given: str, scheme: SignatureScheme) -> None:
        """The scheme is recognised whatever its case, and stored in its documented spelling."""
        extra = {"header": "X-Signature"} if scheme is SignatureScheme.HMAC else {}

        spec = SignatureSpec.model_validate({"scheme": given, "secretSetting": "HOOK_SECRET", **extra})

        assert spec.scheme is scheme

    def test_documented_example_parses(self) -> None:
        """The example from the module docstring is a valid spec."""
        spec = SignatureSpec.model_validate({"scheme": "github", "secretSetting": "GITHUB_WEBHOOK_SECRET"})

        assert spec.secret_setting == "GITHUB_WEBHOOK_SECRET"

    def test_fields_populate_by_name_too(self) -> None:
        """Python field names are accepted as well as the JSON aliases."""
        spec = SignatureSpec(
            scheme=SignatureScheme.HMAC, secret_setting="S", header="X-Sig", id_header="X-Id", encoding="base64"
        )

        assert (spec.id_header, spec.encoding) == ("X-Id", "base64")

    def test_hmac_without_header_is_refused(self) -> None:
        """The hmac scheme must say which header carries the signature."""
        with pytest.raises(ValidationError, match="needs 'header'"):
            SignatureSpec.model_validate({"scheme": "hmac", "secretSetting": "HOOK_SECRET"})

    def test_hmac_fields_are_refused_on_other_schemes(self) -> None:
        """Options that only the hmac scheme reads are refused elsewhere rather than ignored."""
        with pytest.raises(ValidationError, match="'idHeader', 'prefix' only apply to the hmac scheme"):
            SignatureSpec.model_validate(
                {"scheme": "github", "secretSetting": "S", "prefix": "sha1=", "idHeader": "X-Id"}
            )

    def test_tolerance_only_for_standard_webhooks(self) -> None:
        """A tolerance is accepted for standardWebhooks and refused for the schemes without timestamps."""
        SignatureSpec.model_validate({"scheme": "standardWebhooks", "secretSetting": "S", "tolerance": "PT1M"})
        with pytest.raises(ValidationError, match="'tolerance' only applies"):
            SignatureSpec.model_validate({"scheme": "github", "secretSetting": "S", "tolerance": "PT1M"})

    @pytest.mark.parametrize("tolerance", ["five minutes", "PT0S"])
    def test_bad_tolerance_is_refused(self, tolerance: str) -> None:
        """The tolerance must be a positive ISO 8601 duration."""
        with pytest.raises(ValidationError, match="tolerance"):
            SignatureSpec.model_validate({"scheme": "standardWebhooks", "secretSetting": "S", "tolerance": tolerance})

    @pytest.mark.parametrize(
        "setting",
        [
            SW_SECRET,
            "It's a Secret to Everybody",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/==",
            "1SECRET",
            "",
            "A" * 129,
        ],
    )
    def test_secret_setting_must_look_like_a_setting_name(self, setting: str) -> None:
        """Something that is not a setting name (such as a pasted secret) is refused without being echoed."""
        with pytest.raises(ValidationError) as caught:
            SignatureSpec.model_validate({"scheme": "github", "secretSetting": setting})

        assert "name of an app setting" in str(caught.value)
        if setting:
            assert setting not in str(caught.value)
            # What the definition validator reports: messages without the input.
            assert setting not in repr(caught.value.errors(include_input=False))

    def test_unknown_fields_are_refused(self) -> None:
        """A misspelt option is an error, not silently dropped."""
        with pytest.raises(ValidationError, match="secret"):
            SignatureSpec.model_validate({"scheme": "github", "secretSetting": "S", "secret": "oops"})

    def test_bad_header_name_is_refused(self) -> None:
        """The signature header must be an HTTP header name."""
        with pytest.raises(ValidationError, match="HTTP header name"):
            SignatureSpec.model_validate({"scheme": "hmac", "secretSetting": "S", "header": "X Signature"})


class TestBuildReceiver:
    def test_github_receiver_reads_the_named_setting(self) -> None:
        """The GitHub secret comes from the app setting the spec names."""
        spec = SignatureSpec.model_validate({"scheme": "github", "secretSetting": "GITHUB_WEBHOOK_SECRET"})
        receiver = build_receiver(spec, {"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET.decode()})

        headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": DELIVERY}
        assert receiver.verify(headers, GITHUB_BODY, NOW).delivery_id == DELIVERY

    @pytest.mark.parametrize("separator", [" ", ",", ", ", "\n"])
    def test_standard_webhooks_setting_may_hold_several_secrets(self, separator: str) -> None:
        """Secrets separated by spaces or commas are all accepted, so keys can be rotated."""
        spec = SignatureSpec.model_validate({"scheme": "standardWebhooks", "secretSetting": "SW_SECRETS"})
        receiver = build_receiver(spec, {"SW_SECRETS": OTHER_SW_SECRET + separator + SW_SECRET})

        assert receiver.verify(sw_headers(), SW_BODY, SW_NOW).delivery_id == SW_ID
        receiver.verify(signed_sw(SW_TIMESTAMP, secret=OTHER_SW_SECRET), SW_BODY, SW_NOW)

    def test_standard_webhooks_tolerance_comes_from_the_spec(self) -> None:
        """The ISO 8601 tolerance of the spec replaces the 5-minute default."""
        spec = SignatureSpec.model_validate({"scheme": "standardWebhooks", "secretSetting": "SW", "tolerance": "PT10M"})
        receiver = build_receiver(spec, {"SW": SW_SECRET})

        receiver.verify(signed_sw(SW_TIMESTAMP - 600), SW_BODY, SW_NOW)
        assert refused(receiver, signed_sw(SW_TIMESTAMP - 601), SW_BODY, SW_NOW) == "TimestampOutOfTolerance"

    def test_hmac_receiver_uses_the_spec_options(self) -> None:
        """Header, algorithm, encoding, prefix and id header are all taken from the spec."""
        spec = SignatureSpec.model_validate(
            {
                "scheme": "hmac",
                "secretSetting": "PARTNER_SECRET",
                "header": "X-Partner-Signature",
                "algorithm": "sha512",
                "encoding": "base64",
                "prefix": "v1=",
                "idHeader": "X-Partner-Event",
            }
        )
        receiver = build_receiver(spec, {"PARTNER_SECRET": GENERIC_SECRET.decode()})
        value = "v1=" + base64.b64encode(raw_hmac(b"{}", "sha512")).decode()

        verified = receiver.verify({"x-partner-signature": value, "x-partner-event": "e-1"}, b"{}", NOW)

        assert verified.delivery_id == "e-1"

    @pytest.mark.parametrize(
        "env", [{}, {"HOOK_SECRET": ""}, {"HOOK_SECRET": "   "}], ids=["missing", "empty", "blank"]
    )
    def test_missing_setting_names_the_setting(self, env: dict[str, str]) -> None:
        """A missing or empty setting is a ConfigurationError that names the setting."""
        spec = SignatureSpec.model_validate({"scheme": "github", "secretSetting": "HOOK_SECRET"})

        with pytest.raises(ConfigurationError, match="HOOK_SECRET"):
            build_receiver(spec, env)

    def test_setting_is_looked_up_by_exact_name_only(self) -> None:
        """Other settings, including one holding a secret under another name, are not used or shown."""
        spec = SignatureSpec.model_validate({"scheme": "github", "secretSetting": "HOOK_SECRET"})

        with pytest.raises(ConfigurationError) as caught:
            build_receiver(spec, {"OTHER_SECRET": "do-not-print-me", "hook_secret": "nor-me"})

        assert "do-not-print-me" not in str(caught.value)
        assert "nor-me" not in str(caught.value)

    def test_malformed_standard_webhooks_secret_names_the_setting_not_the_value(self) -> None:
        """A setting that does not hold base64 secrets is reported by name, never by value."""
        spec = SignatureSpec.model_validate({"scheme": "standardWebhooks", "secretSetting": "SW"})
        value = f"{SW_SECRET} whsec_not*base64*at*all"

        with pytest.raises(ConfigurationError) as caught:
            build_receiver(spec, {"SW": value})

        message = str(caught.value)
        assert "SW" in message
        assert "not*base64" not in message
        assert SW_SECRET.removeprefix("whsec_") not in message
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__
