"""Identities (keys, files, ids) and signed owner requests (forged, replayed, stale, unsigned)."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from client.identity import Identity
from servers.request_auth import RequestRejected, RequestVerifier
from wire.identity import IdentityError, PublicIdentity, user_id_for
from wire.signing import EncodingError, SignedRequest, canonical_json, sign_request

AUD = "deployment-test"
T0 = 1_700_000_000.0


class Clock:
    """A settable clock for the verifier."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_identity_roundtrip_permissions_and_id(tmp_path):
    ident = Identity.create({"role": "doctor", "organisation": "St Mary"})
    d = ident.save(tmp_path / "me")
    for name in ("sign.key", "kex.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    loaded = Identity.load(d)
    assert loaded.user_id == ident.user_id
    assert loaded.public() == ident.public()
    assert loaded.public().attributes == {"role": "doctor", "organisation": "St Mary"}
    msg = b"hello"
    assert ident.public().verify(loaded.sign(msg), msg)
    assert not ident.public().verify(loaded.sign(msg), b"other")
    # the id is derived from both public keys and is not a secret-bearing repr
    pub = ident.public()
    assert pub.user_id == user_id_for(pub.sign_pub, pub.kex_pub) and len(pub.user_id) == 32
    assert repr(ident) == f"Identity(user_id={ident.user_id!r})"
    assert Identity.create().user_id != ident.user_id


def test_identity_refuses_unsafe_files_and_overwrite(tmp_path):
    ident = Identity.create()
    d = ident.save(tmp_path / "me")
    with pytest.raises(IdentityError, match="exists"):
        ident.save(d)
    os.chmod(d / "sign.key", 0o644)
    with pytest.raises(IdentityError, match="0600"):
        Identity.load(d)


def test_identity_passphrase(tmp_path):
    ident = Identity.create()
    d = ident.save(tmp_path / "me", passphrase=b"correct horse")
    assert b"ENCRYPTED" in (d / "sign.key").read_bytes()
    assert Identity.load(d, passphrase=b"correct horse").user_id == ident.user_id
    with pytest.raises(IdentityError, match="passphrase"):
        Identity.load(d, passphrase=b"wrong")


def test_public_bundle_cannot_claim_another_id():
    a, b = Identity.create(), Identity.create()
    d = a.public().to_dict()
    assert PublicIdentity.from_json(a.public().to_json()) == a.public()
    d["user_id"] = b.user_id
    with pytest.raises(IdentityError, match="does not match"):
        PublicIdentity.from_dict(d)


def test_private_keys_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    ident = Identity.create()
    d = ident.save(tmp_path / "me")
    Identity.load(d)
    pem = (d / "sign.key").read_text().splitlines()[1]
    assert pem not in caplog.text and pem not in repr(ident)


def test_canonical_json_is_deterministic_and_strict():
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    for bad in ({"x": 1.5}, {"x": b"raw"}, {1: "k"}, {"x": float("nan")}):
        with pytest.raises(EncodingError):
            canonical_json(bad)


def _verifier(tmp_path, owner: Identity, clock: Clock, **kw) -> RequestVerifier:
    keys = {owner.user_id: owner.public().sign_pub}
    return RequestVerifier(tmp_path / "auth.db", keys.get, AUD, window_s=300, skew_s=30, clock=clock, **kw)


def test_valid_request_is_accepted_once_even_across_restart(tmp_path):
    owner, clock = Identity.create(), Clock(T0)
    v = _verifier(tmp_path, owner, clock)
    req = sign_request(owner, "grant", {"collection": "c1", "user": "u" * 32, "outcome": "ORIGINAL"}, AUD, now=T0)
    wire = req.to_bytes()
    ok = v.verify(wire, expected_action="grant")
    assert ok.signer == owner.user_id and ok.params["outcome"] == "ORIGINAL"
    with pytest.raises(RequestRejected) as e:
        v.verify(wire)
    assert e.value.reason == "replayed"
    v.close()
    v2 = _verifier(tmp_path, owner, clock)  # restart: the nonce cache is persisted
    with pytest.raises(RequestRejected, match="replayed"):
        v2.verify(wire)


def test_forged_unsigned_wrong_signer_rejected(tmp_path):
    owner, mallory, clock = Identity.create(), Identity.create(), Clock(T0)
    v = _verifier(tmp_path, owner, clock)
    req = sign_request(owner, "revoke", {"collection": "c1", "user": "x"}, AUD, now=T0)
    d = req.to_dict()
    d["params"]["user"] = "y"  # tampered parameter
    with pytest.raises(RequestRejected) as e:
        v.verify(d)
    assert e.value.reason == "forged"
    d = req.to_dict()
    d["signature"] = ""
    with pytest.raises(RequestRejected, match="unsigned"):
        v.verify(d)
    # mallory signs but claims to be the owner
    m = sign_request(mallory, "delete", {"image": 3}, AUD, now=T0)
    claim = SignedRequest(m.action, m.params, owner.user_id, m.nonce, m.ts_ms, m.audience, m.signature)
    with pytest.raises(RequestRejected, match="forged"):
        v.verify(claim)
    with pytest.raises(RequestRejected, match="unknown-signer"):
        v.verify(m)
    with pytest.raises(RequestRejected, match="wrong-audience"):
        v.verify(sign_request(owner, "delete", {"image": 3}, "other-deployment", now=T0))
    with pytest.raises(RequestRejected, match="malformed"):
        v.verify(b"not json")
    with pytest.raises(RequestRejected, match="bad-action"):
        v.verify(sign_request(owner, "delete", {"image": 3}, AUD, now=T0), expected_action="grant")
    assert v.cached_nonces() == 0  # nothing rejected was remembered


def test_stale_and_future_requests_rejected_and_cache_bounded(tmp_path):
    owner, clock = Identity.create(), Clock(T0)
    v = _verifier(tmp_path, owner, clock)
    with pytest.raises(RequestRejected) as e:
        v.verify(sign_request(owner, "upload", {"n": 1}, AUD, now=T0 - 301))
    assert e.value.reason == "stale" and "301 s old" in str(e.value)
    with pytest.raises(RequestRejected, match="future"):
        v.verify(sign_request(owner, "upload", {"n": 1}, AUD, now=T0 + 31))
    old = sign_request(owner, "upload", {"n": 1}, AUD, now=T0 - 299)
    v.verify(old)
    for i in range(5):
        v.verify(sign_request(owner, "upload", {"n": i}, AUD, now=T0))
    assert v.cached_nonces() == 6
    clock.t = T0 + 400  # everything above is now outside the window
    v.verify(sign_request(owner, "upload", {"n": 9}, AUD, now=clock.t))
    assert v.cached_nonces() == 1
    with pytest.raises(RequestRejected, match="stale"):  # pruned, yet still not replayable
        v.verify(old)
