"""Client side of marked release (``wire.pixel_shares``, ``servers.release``).

Owner, at upload and rekey: :func:`pixel_tensors` decodes one copy's bytes to RGB (downscaled
to :data:`RELEASE_MAX_SIDE` on its longer side: :func:`released_rgb`), splits
it into pixel shares and adds the image's mark keys (derived from the owner's signing key,
``client.watermark.owner_mark_keys``): key ``j`` goes to the two servers holding component
``j``. Recipient, at retrieval: :func:`open_marked` opens each server's sealed pair, checks
every component against its second holder and returns the marked RGB image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from wire import bundle as bd
from wire.pixel_shares import PixelShareError, open_pair, pack, reconstruct, split_pixels

from .identity import Identity
from .preprocess import viewed_rgb
from .watermark import owner_mark_keys, signing_key_bytes

#: Longest side, in pixels, of the copy released to a recipient who is not the owner. Every
#: pixel costs 3.4 bytes on servers 1 and 2 (``wire.pixel_shares``: a uniform, incompressible
#: component, 9 bits per value) and as much upload for the owner: a 12-megapixel phone photo
#: (4000 x 3000) would take 40 MB per server and copy (72 MB before the shares were packed),
#: 80 MB with its de-identified copy; at 2048 it takes 10.6 MB.
#: 2048 is what common sharing services cap photos at; the owner's own retrieval is always the
#: stored file. Changing it changes the released form of images uploaded afterwards only, and
#: ``trace`` recomputes the released form with it: keep it fixed for a deployment.
RELEASE_MAX_SIDE = 2048


def decode_rgb(blob: bytes) -> np.ndarray:
    """An image file's bytes as RGB uint8 (as a viewer shows it: ``client.preprocess.viewed_rgb``)."""
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(viewed_rgb(im))


def released_rgb(blob: bytes, max_side: int = RELEASE_MAX_SIDE) -> np.ndarray:
    """The released form of one copy: :func:`decode_rgb`, downscaled (Lanczos, aspect kept) when
    its longer side exceeds ``max_side``. Deterministic, so the owner's ``trace`` recomputes the
    exact pixels the servers marked."""
    rgb = decode_rgb(blob)
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def _u8(data: bytes | np.ndarray) -> torch.Tensor:
    if isinstance(data, bytes):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return torch.frombuffer(bytearray(pack(data)), dtype=torch.uint8)  # the packed Z_2^9 component


def pixel_tensors(owner: Identity, image_id: int, blob: bytes, deid: bool) -> list[dict[str, torch.Tensor]]:
    """Per server: its pixel-share pair, the two mark keys that go with it, and the public shape."""
    rgb = released_rgb(blob)
    pairs = split_pixels(rgb)
    keys = owner_mark_keys(signing_key_bytes(owner), image_id, deid)
    name = f"pix/{int(image_id)}{'.deid' if deid else ''}"
    shape = torch.tensor(list(rgb.shape), dtype=torch.int64)
    return [{f"{name}/a": _u8(pairs[i][0]), f"{name}/b": _u8(pairs[i][1]), f"{name}/ka": _u8(keys[i]),
             f"{name}/kb": _u8(keys[(i + 1) % 3]), f"{name}/shape": shape} for i in range(3)]


def open_marked(outs: Sequence[bd.Bundle | None], got: Sequence[int], identity: Identity, image_id: int,
                deid: bool) -> np.ndarray:
    """The marked RGB image from the servers in ``got`` (PixelShareError names a server that lies)."""
    shapes = {tuple(outs[i].meta.get("shape", ())) for i in got}  # type: ignore[union-attr]
    if len(shapes) != 1:
        raise PixelShareError(f"image {image_id}: the servers disagree on its shape {sorted(shapes)}", tuple(got))
    shape = tuple(int(d) for d in shapes.pop())
    if len(shape) != 3 or shape[2] != 3:
        raise PixelShareError(f"image {image_id}: bad shape {list(shape)}", tuple(got))
    pairs: list[tuple[np.ndarray, np.ndarray] | None] = [None] * 3
    for i in got:
        t = outs[i].tensors.get("sealed_pixels")  # type: ignore[union-attr]
        if t is None:
            raise PixelShareError(f"server {i} sent no pixel shares", (i,))
        pairs[i] = open_pair(bytes(t.numpy().tobytes()), identity.kex_key, i, image_id, deid, identity.user_id,
                             shape)
    return reconstruct(pairs)
