"""Owner-signed image hashes: verification on retrieval and tamper reports."""

from __future__ import annotations

import pytest

from client import crypto
from client.identity import Identity
from client.integrity import ImageSignature, TamperError, open_record, seal_record, sign_image, verify_image

DATA = bytes(range(256)) * 100


def test_untampered_image_verifies_for_both_kinds():
    owner = Identity.create()
    for kind in ("orig", "deid"):
        rec = sign_image(owner, 5, DATA, kind)
        assert verify_image(owner.public(), 5, DATA, rec.to_bytes(), kind) == rec


def test_tampering_is_reported():
    owner, mallory = Identity.create(), Identity.create()
    rec = sign_image(owner, 5, DATA)
    flipped = bytearray(DATA)
    flipped[1000] ^= 1
    with pytest.raises(TamperError, match="tampered"):
        verify_image(owner.public(), 5, bytes(flipped), rec)
    with pytest.raises(TamperError, match="record is for image 6"):  # a record swapped from another image
        verify_image(owner.public(), 5, DATA, sign_image(owner, 6, DATA))
    with pytest.raises(TamperError, match="record is for image 5 \\(deid\\)"):
        verify_image(owner.public(), 5, DATA, sign_image(owner, 5, DATA, "deid"))
    forged = ImageSignature(owner.user_id, 5, "orig", "0" * 64, rec.signature)
    with pytest.raises(TamperError, match="forged"):
        verify_image(owner.public(), 5, b"x", forged)
    m = sign_image(mallory, 5, bytes(flipped))  # a server (or mallory) re-signs altered bytes
    with pytest.raises(TamperError, match="names owner"):
        verify_image(owner.public(), 5, bytes(flipped), m)
    with pytest.raises(TamperError, match="malformed"):
        verify_image(owner.public(), 5, DATA, b"{not json")


def test_record_sealed_under_image_key():
    owner, key = Identity.create(), crypto.new_key()
    rec = sign_image(owner, 9, DATA)
    blob = seal_record(rec, key, crypto.encrypt)
    assert rec.sha256.encode() not in blob
    assert open_record(blob, key, 9, "orig", crypto.decrypt) == rec
    with pytest.raises(TamperError, match="does not decrypt"):
        open_record(blob[:-1] + bytes([blob[-1] ^ 1]), key, 9, "orig", crypto.decrypt)
    with pytest.raises(TamperError, match="does not decrypt"):
        open_record(blob, key, 10, "orig", crypto.decrypt)
