"""Callback URL signatures: what verifies, what is refused, key rotation and redaction."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest

from shared.errors import Unauthorized
from shared.signing import CallbackSigner, CallbackTarget, new_nonce, redact_url
from tests.unit.builders import BASE_URL, CallbackAddress, parse_callback_url

OLD_KEY = b"old-key-0123456789abcdef"
NEW_KEY = b"new-key-fedcba9876543210"
RUN_ID = "0982327312000000a1b2c3d4e5f6"
ACTION = "Wait_for_approval"
NONCE = "n0nce-AbC_123"


def signed(signer: CallbackSigner | None = None, *, action: str = ACTION, run_id: str = RUN_ID) -> CallbackAddress:
    """A callback URL signed by ``signer`` (the old key by default), taken apart."""
    signer = signer or CallbackSigner([OLD_KEY])
    return parse_callback_url(signer.action_url(BASE_URL, run_id, action, NONCE))


def with_query(address: CallbackAddress, **changes: str | None) -> dict[str, str]:
    """The address's query with some parameters replaced (``None`` removes one)."""
    query = dict(address.query)
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return query


class TestSignedUrl:
    def test_url_signed_by_the_signer_verifies(self) -> None:
        """A callback URL handed out by the engine is accepted and names its run, action and wait."""
        address = signed()

        target = CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, address.query)

        assert target == CallbackTarget(run_id=RUN_ID, action=ACTION, nonce=NONCE)

    def test_url_has_the_documented_shape(self) -> None:
        """The URL is ``{base}/api/callbacks/runs/{run}/actions/{action}`` with ``sv``, ``nonce`` and ``sig``."""
        url = CallbackSigner([OLD_KEY]).action_url(BASE_URL + "/", RUN_ID, ACTION, NONCE)

        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
        assert parts.path == f"/api/callbacks/runs/{RUN_ID}/actions/{ACTION}"
        assert set(dict(parse_qsl(parts.query))) == {"sv", "nonce", "sig"}

    def test_query_order_does_not_matter(self) -> None:
        """A client that reorders the query parameters still gets through."""
        address = signed()
        reordered = dict(reversed(list(address.query.items())))

        target = CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, reordered)

        assert target.nonce == NONCE

    def test_same_wait_on_another_base_url_verifies(self) -> None:
        """The base URL is not signed, so a URL rewritten by a proxy still verifies."""
        url = CallbackSigner([OLD_KEY]).action_url("http://internal:7071", RUN_ID, ACTION, NONCE)
        address = parse_callback_url(url)

        assert CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, address.query).run_id == RUN_ID

    def test_fresh_nonces_differ(self) -> None:
        """Every wait gets its own unguessable nonce."""
        nonces = {new_nonce() for _ in range(100)}

        assert len(nonces) == 100
        assert all(len(n) >= 20 for n in nonces)

    def test_signer_needs_a_key(self) -> None:
        """A signer without keys is refused at construction, not at the first callback."""
        with pytest.raises(ValueError, match="key"):
            CallbackSigner([])


class TestTampering:
    def test_other_run_id_is_refused(self) -> None:
        """A URL for one run cannot resume another run."""
        address = signed()

        with pytest.raises(Unauthorized) as caught:
            CallbackSigner([OLD_KEY]).verify_action(RUN_ID + "0", address.action, address.query)

        assert caught.value.status == 401
        assert caught.value.code == "InvalidSignature"

    def test_other_action_name_is_refused(self) -> None:
        """A URL for one action cannot resume another action of the same run."""
        address = signed()

        with pytest.raises(Unauthorized, match="not valid"):
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, "Another_action", address.query)

    def test_changed_nonce_is_refused(self) -> None:
        """A URL cannot be pointed at another wait by swapping its nonce."""
        address = signed()

        with pytest.raises(Unauthorized, match="not valid"):
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, with_query(address, nonce="other"))

    @pytest.mark.parametrize("version", ["2", "0", ""])
    def test_changed_signature_version_is_refused(self, version: str) -> None:
        """A URL claiming another signature version is refused."""
        address = signed()

        with pytest.raises(Unauthorized) as caught:
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, with_query(address, sv=version))

        assert caught.value.code == "InvalidSignature"

    def test_missing_signature_version_is_refused(self) -> None:
        """A URL without ``sv`` is refused."""
        address = signed()

        with pytest.raises(Unauthorized):
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, with_query(address, sv=None))

    def test_changed_signature_is_refused(self) -> None:
        """A forged or damaged ``sig`` is refused."""
        address = signed()
        sig = address.query["sig"]
        forged = ("A" if sig[0] != "A" else "B") + sig[1:]

        with pytest.raises(Unauthorized) as caught:
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, with_query(address, sig=forged))

        assert caught.value.code == "InvalidSignature"

    @pytest.mark.parametrize("sig", [None, ""])
    def test_missing_signature_is_refused(self, sig: str | None) -> None:
        """A URL without a signature is refused with its own error code."""
        address = signed()

        with pytest.raises(Unauthorized) as caught:
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, with_query(address, sig=sig))

        assert caught.value.code == "MissingSignature"

    def test_extra_query_parameter_is_refused(self) -> None:
        """Adding a query parameter to a signed URL invalidates it."""
        address = signed()

        with pytest.raises(Unauthorized):
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, {**address.query, "extra": "1"})

    def test_url_signed_with_an_unknown_key_is_refused(self) -> None:
        """A URL signed by someone else's key does not verify."""
        address = signed(CallbackSigner([b"attacker"]))

        with pytest.raises(Unauthorized):
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, address.query)


class TestKeyRotation:
    def test_old_url_verifies_while_the_old_key_is_listed(self) -> None:
        """After a new key is put in front, URLs signed with the old key keep working."""
        address = signed(CallbackSigner([OLD_KEY]))

        target = CallbackSigner([NEW_KEY, OLD_KEY]).verify_action(address.run_id, address.action, address.query)

        assert target.nonce == NONCE

    def test_new_urls_are_signed_with_the_first_key(self) -> None:
        """After rotation, new URLs verify with the new key alone."""
        address = signed(CallbackSigner([NEW_KEY, OLD_KEY]))

        assert CallbackSigner([NEW_KEY]).verify_action(address.run_id, address.action, address.query).nonce == NONCE
        with pytest.raises(Unauthorized):
            CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, address.query)

    def test_old_url_is_refused_once_the_old_key_is_dropped(self) -> None:
        """Dropping a key invalidates every URL it signed."""
        address = signed(CallbackSigner([OLD_KEY]))

        with pytest.raises(Unauthorized):
            CallbackSigner([NEW_KEY]).verify_action(address.run_id, address.action, address.query)


class TestPercentEncoding:
    @pytest.mark.parametrize("action", ["Wait for approval", "a/b", "Über-Prüfung", "x?y&z=1#f", "100%"])
    def test_action_name_round_trips(self, action: str) -> None:
        """Any action name is percent-encoded into one path segment and verifies once decoded."""
        url = CallbackSigner([OLD_KEY]).action_url(BASE_URL, RUN_ID, action, NONCE)
        address = parse_callback_url(url)

        assert urlsplit(url).path.endswith("/actions/" + quote(action, safe=""))
        assert address.action == action
        assert CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, address.query).action == action

    def test_re_encoded_path_still_verifies(self) -> None:
        """A client that percent-encodes characters that need none (``%5F`` for ``_``) is not refused."""
        url = CallbackSigner([OLD_KEY]).action_url(BASE_URL, RUN_ID, ACTION, NONCE)
        re_encoded = url.replace(f"/actions/{ACTION}", "/actions/" + ACTION.replace("_", "%5F"))
        address = parse_callback_url(re_encoded)

        assert address.action == ACTION
        assert CallbackSigner([OLD_KEY]).verify_action(address.run_id, address.action, address.query).action == ACTION


class TestRedactUrl:
    def test_only_the_signature_is_hidden(self) -> None:
        """The redacted URL keeps host, path, ``sv`` and ``nonce``, and shows ``sig=***``."""
        url = CallbackSigner([OLD_KEY]).action_url(BASE_URL, RUN_ID, ACTION, NONCE)
        sig = parse_callback_url(url).query["sig"]

        redacted = redact_url(url)

        assert sig not in redacted
        assert redacted == url.replace(f"sig={sig}", "sig=***")
        assert parse_callback_url(redacted).query == {"sv": "1", "nonce": NONCE, "sig": "***"}

    def test_url_without_query_is_unchanged(self) -> None:
        """A URL with no query has nothing to hide."""
        assert redact_url("https://target.example/path") == "https://target.example/path"

    def test_parameters_that_merely_end_in_sig_are_kept(self) -> None:
        """Only the ``sig`` parameter itself is replaced, not look-alikes."""
        url = "https://h.example/p?" + urlencode({"xsig": "1", "sig": "secret", "signal": "2"})

        assert redact_url(url) == "https://h.example/p?xsig=1&sig=***&signal=2"
