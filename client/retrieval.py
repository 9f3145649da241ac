"""The querier's retrieval: sealed shares from each server, combined (and for the owner decrypted, verified).

One signed request goes to all three servers; each evaluates the policy itself. A user who
is not the image's owner gets each server's *marked pixel-share pair* (``wire.pixel_shares``:
the servers add the user's mark on shares; every component is checked against its second
holder, ``PixelShareError`` names a liar) and never an unmarked copy. The owner gets each
server's key-share pair sealed to the owner's REGISTERED X25519 key. With all three pairs the shares
are cross-checked (a lying server is named: ``KeyDeliveryError.suspects``); with two,
AES-GCM on the ciphertext catches a wrong key. The owner's signed hash is then verified
(``TamperError`` on mismatch).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
from PIL import Image

from protos.trivault.v1 import trivault_pb2 as pb
from wire import bundle as bd
from wire.identity import PublicIdentity
from wire.key_delivery import KeyDeliveryError, recover_key

from . import crypto
from .errors import TriVaultError
from .identity import Identity
from .integrity import open_record, verify_image
from .pixel_release import decode_rgb, open_marked
from .transport import Fanout, Sign, rpc_error


@dataclass
class Retrieved:
    """A released image: for the owner the uploaded file bytes (decrypted, integrity-checked);
    for anyone else a PNG of the pixels the servers marked for this recipient. Also its label
    and which copy (``orig``/``deid``) the policy released."""

    image_id: int
    data: bytes
    label: str | None
    kind: str = "orig"
    recipient: str = ""
    verified: bool = False
    watermarked: bool = False  # True: the servers released it marked for ``recipient`` (PNG of the pixels)
    # servers whose answer was not used, with the reason (a refusal, or another copy than the
    # majority's): the image then rests on two servers, without the third holder's cross-check
    unused: dict[int, str] = field(default_factory=dict)

    def array(self) -> np.ndarray:
        """Decoded RGB uint8 array."""
        return decode_rgb(self.data)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Lossless PNG of an RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _bytes(t) -> bytes:
    return bytes(t.numpy().tobytes())


def fetch_releases(fan: Fanout, sign: Sign, image_id: int, deid: bool, purpose: str | None,
                   timeout_s: float) -> tuple[list[bd.Bundle | None], list[int], bool, dict[int, str]]:
    """Each server's answer (None if it refused), the servers releasing the majority copy,
    whether that copy is the de-identified one, and why each other server's answer is not used;
    TriVaultError if fewer than two release it."""
    auth = sign("retrieve", {"image_id": int(image_id), "deid": bool(deid), "purpose": purpose})
    req = pb.ImageRequest(image_id=int(image_id), deid=deid, auth=auth)
    errors: list[str] = [""] * 3

    def one(i: int) -> bd.Bundle | None:
        try:
            return bd.decode(fan.stubs[i].Retrieve(req, timeout=timeout_s))
        except grpc.RpcError as exc:
            errors[i] = rpc_error(i, exc)
            return None

    outs = fan.all(one)
    kinds = {i: o.meta.get("kind") for i, o in enumerate(outs) if o is not None}
    best = max(("orig", "deid"), key=lambda kd: sum(v == kd for v in kinds.values()))
    got = [i for i, kd in kinds.items() if kd == best]
    if len(got) < 2:
        why = "; ".join(e for e in errors if e) or f"the servers disagree on which copy to release ({kinds})"
        raise TriVaultError(f"image {image_id}: fewer than two servers release a key: {why}")
    unused = {i: errors[i] or f"server {i} released the {kinds.get(i)} copy" for i in range(3) if i not in got}
    return outs, got, best == "deid", unused


def retrieve(fan: Fanout, sign: Sign, identity: Identity, owner_identity: Callable[[], PublicIdentity],
             image_id: int, deid: bool = False, purpose: str | None = None, timeout_s: float = 60.0) -> Retrieved:
    """Fetch, decrypt and verify an image the policy releases to ``identity``."""
    outs, got, is_deid, unused = fetch_releases(fan, sign, image_id, deid, purpose, timeout_s)
    answers = {i: o for i, o in enumerate(outs) if o is not None}  # every server in ``got`` answered
    kind = "deid" if is_deid else "orig"
    if any(answers[i].meta.get("form") == "marked" for i in got):
        rgb = open_marked(outs, got, identity, int(image_id), is_deid)  # PixelShareError names a liar
        return Retrieved(int(image_id), png_bytes(rgb), answers[got[0]].meta.get("label"), kind,
                         identity.user_id, watermarked=True, unused=unused)
    sealed = [_bytes(answers[i].tensors["sealed"]) if i in got else None for i in range(3)]
    key = recover_key(sealed, identity.kex_key, int(image_id), is_deid)  # KeyDeliveryError names suspects
    ct = _bytes(answers[got[0]].tensors["ciphertext"])
    try:
        data = crypto.decrypt(key, ct, crypto.image_aad(int(image_id), is_deid))
    except ValueError:
        raise KeyDeliveryError(f"image {image_id}: the key does not decrypt the ciphertext from server {got[0]} "
                               f"(a server sent a wrong share or ciphertext)", tuple(got)) from None
    verified = False
    rec = answers[got[0]].tensors.get("record")
    if rec is not None:
        record = open_record(_bytes(rec), key, int(image_id), kind, crypto.decrypt)
        verify_image(owner_identity(), int(image_id), data, record, kind)  # TamperError
        verified = True
    return Retrieved(int(image_id), data, answers[got[0]].meta.get("label"), kind, identity.user_id, verified,
                     unused=unused)
