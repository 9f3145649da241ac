"""Issue 17 items 1 and 4 across three real server processes: a recipient only ever receives a
copy the servers marked on shares, the owner traces it after JPEG 75 + a 50% resize, and
revoke + rekey leave kept key shares useless."""

from __future__ import annotations

import io
import uuid

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from client.crypto import DecryptionError, decrypt, image_aad
from client.encryption import encrypt_copy
from client.identity import Identity
from client.local_cluster import LocalCluster
from client.sdk import Client, TriVaultError
from client.watermark import owner_mark_keys, signing_key_bytes
from servers.storage import npz_to_tensors
from wire import bundle as bd
from wire.key_delivery import words_to_key
from wire.pixel_shares import mark

from .conftest import RES, tiny_model


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


PHOTO = np.ascontiguousarray(data.astronaut()[::2, ::2])  # 256 x 256 real photo
OTHER = np.ascontiguousarray(data.chelsea()[:200, :240])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Three servers, the tiny model, two photos, and two registered users granted ORIGINAL."""
    lc = LocalCluster(tmp_path_factory.mktemp("wm"), txn_timeout_s=8.0, peer_timeout_s=5.0, query_timeout_s=30.0)
    lc.start()
    clients: list[Client] = []
    try:  # the servers stop even if the set-up fails
        owner = Client(lc.client_config, progress=False)
        clients.append(owner)
        owner.register_model(tiny_model(), resolution=RES)
        ids = owner.upload([PHOTO, OTHER], labels=["photo", "other"])
        users = {}
        for name in ("bob", "carol"):
            ident = Identity.create()
            owner.register_user(ident.public(), {"role": name})
            owner.grant(ident.user_id, outcome="ORIGINAL")
            users[name] = Client(lc.client_config, progress=False, identity=ident)
            clients.append(users[name])
        yield lc, owner, users, ids
    finally:
        for c in clients:
            c.close()
        lc.stop()


def _key_from_servers(lc: LocalCluster, image_id: int) -> bytes:
    """The AES key as someone who kept all three servers' key shares would rebuild it."""
    total = None
    for s in range(3):
        t = npz_to_tensors(lc.root / "data" / f"server{s}" / "objects" / "key" / f"{image_id}.npz")
        total = t["lo"] if total is None else total + t["lo"]
    return words_to_key(total)


def _ciphertext(lc: LocalCluster, image_id: int) -> bytes:
    return (lc.root / "data" / "server0" / "objects" / "img" / f"{image_id}.enc").read_bytes()


def test_recipient_gets_a_marked_copy_the_owner_traces(world, tmp_path):
    lc, owner, users, (pid, oid) = world
    bob, carol = users["bob"], users["carol"]
    mine = owner.retrieve(pid)
    assert not mine.watermarked and mine.verified and np.array_equal(mine.array(), PHOTO)  # owner: unmarked
    got = bob.retrieve(pid)
    assert got.watermarked and not got.verified
    marked = got.array()
    assert marked.shape == PHOTO.shape and 38 < _psnr(marked, PHOTO) < 50
    keys = owner_mark_keys(signing_key_bytes(owner.identity), pid, False)
    expect = np.clip(PHOTO.astype(int) + mark(keys, bob.identity.user_id, *PHOTO.shape[:2])[:, :, None], 0, 255)
    np.testing.assert_array_equal(marked, expect)  # exactly x + P_bob, reconstructed from shares
    assert not np.array_equal(carol.retrieve(pid).array(), marked)  # carol's copy carries carol's mark
    # the leak: downscaled by half and re-compressed at JPEG 75
    small = cv2.resize(marked, (128, 128), interpolation=cv2.INTER_AREA)
    leak = tmp_path / "leak.jpg"
    cv2.imwrite(str(leak), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
    found = owner.trace(leak)
    assert found is not None and found.image_id == pid and found.user_id == bob.identity.user_id
    assert set(found.scores) == {bob.identity.user_id, carol.identity.user_id}  # from the audit's retrievals
    assert found.scores[carol.identity.user_id] < 6 <= found.score
    with pytest.raises(TriVaultError, match="owner"):
        bob.trace(leak)


def test_revoke_then_rekey_makes_kept_key_shares_useless(world):
    lc, owner, users, (pid, oid) = world
    bob, carol = users["bob"], users["carol"]
    old_key, old_ct = _key_from_servers(lc, pid), _ciphertext(lc, pid)
    before = owner.retrieve(pid).data
    assert decrypt(old_key, old_ct, image_aad(pid)) == before  # what kept shares opened before
    old_pix = (lc.root / "data" / "server1" / "objects" / "pix" / f"{pid}.npz").read_bytes()
    owner.revoke(bob.identity.user_id, image_id=pid)
    assert owner._pending_rekeys.ids() == [pid]
    with pytest.raises(TriVaultError):
        bob.retrieve(pid)
    assert owner.rekey() == [pid] and owner._pending_rekeys.ids() == []
    new_ct = _ciphertext(lc, pid)
    assert new_ct != old_ct
    with pytest.raises(DecryptionError):
        decrypt(old_key, new_ct, image_aad(pid))  # the old key opens nothing stored any more
    assert (lc.root / "data" / "server1" / "objects" / "pix" / f"{pid}.npz").read_bytes() != old_pix
    again = owner.retrieve(pid)
    assert again.verified and again.data == before  # the owner's image is intact
    assert carol.retrieve(pid).watermarked  # other grantees still get their marked copy
    assert bob.retrieve(oid).watermarked  # bob's other image was not revoked


def test_only_the_owner_rekeys(world):
    lc, owner, users, (pid, oid) = world
    carol = users["carol"]
    with pytest.raises(TriVaultError, match="owner"):
        carol.rekey([oid])  # her client sees only a marked copy
    forged = encrypt_copy(carol.identity, oid, _png(OTHER), False)  # her own key and pixels, signed by her
    bundles = [bd.Bundle("txn", str(uuid.uuid4()), {"rekeys": [{"id": oid, "deid": False}]}, forged[s])
               for s in range(3)]
    with pytest.raises(TriVaultError, match="not-owner"):
        carol._transact(bundles)
    assert owner.retrieve(oid).verified  # nothing replaced


def test_an_image_without_pixel_shares_is_refused_to_others_until_rekeyed(world):
    lc, owner, users, (pid, oid) = world
    for s in range(3):  # as if uploaded before marks on shares
        (lc.root / "data" / f"server{s}" / "objects" / "pix" / f"{oid}.npz").unlink()
    with pytest.raises(TriVaultError, match="trivault rekey"):
        users["bob"].retrieve(oid)
    assert owner.retrieve(oid).verified  # the owner's path needs no pixel shares
    assert owner.rekey([oid]) == [oid]
    assert users["bob"].retrieve(oid).watermarked


def test_a_large_photo_is_released_at_the_capped_size_and_still_traced(world, tmp_path):
    """A 2400 x 1800 photo: the recipient gets the 2048 x 1536 released form (pixel shares cost 3.4 bytes
    per pixel on two servers), the owner gets the stored file, and trace recomputes the released
    form to name the recipient of a downscaled JPEG leak."""
    lc, owner, users, _ = world
    bob = users["bob"]
    big = np.asarray(Image.fromarray(data.coffee()).resize((2400, 1800), Image.Resampling.BICUBIC))
    (bid,) = owner.upload([big], labels=["big"])
    assert np.array_equal(owner.retrieve(bid).array(), big)  # the owner's copy is the stored file
    marked = bob.retrieve(bid).array()
    assert marked.shape == (1536, 2048, 3)
    stored = (lc.root / "data" / "server1" / "objects" / "pix" / f"{bid}.npz").stat().st_size
    assert stored < 3.5 * 1536 * 2048  # 27/8 bytes per released pixel (+ seeds, keys), not per stored pixel
    leak = tmp_path / "big_leak.jpg"
    small = cv2.resize(marked, (1024, 768), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(leak), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
    found = owner.trace(leak, image_id=bid)
    assert found is not None and found.user_id == bob.identity.user_id and found.score >= 6
