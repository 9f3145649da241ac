"""Pixel shares: an image as replicated shares in Z_2^9, marked per recipient at release.

**Sharing** (owner, at upload). The released form of an image (its RGB pixels, ``[H, W, 3]``
uint8) is split as ``x = x0 + x1 + x2 (mod 2^9)``; server ``i`` holds components ``i`` and
``i+1`` (ABY3 replicated sharing, as for key shares). Two components are *seeded*: ``x0`` and
``x1`` are AES-CTR streams of 16-byte seeds ``s0``, ``s1``; only ``x2 = x - x0 - x1`` is a
full array, stored and sent *packed*: ``9 / 8`` bytes per value (:func:`pack`: the low bytes,
then the ninth bits bit-packed). So server 0 stores two seeds (32 bytes), servers 1 and 2 one
seed and ``27 / 8`` bytes per pixel: 6.75 bytes per pixel in all. Nine bits are the fewest
that hold ``x + P`` (``-6 .. 261``, see *Mark*) without clamping the image; any 2-of-3 scheme
needs servers 1 and 2 to hold an image's worth each. The owner's client also caps the released
form at ``client.pixel_release.RELEASE_MAX_SIDE``. (Until 2026-12-03 the ring was Z_2^16, 12
bytes per pixel in all; such stored shares are refused at release with a pointer to
``trivault rekey``.)
What one server sees is independent of the image: server 0 only seeds; server 1 ``s1`` and
``x2``, which ``x0`` (seed unknown to it) masks; server 2 ``s0`` and ``x2``, masked by ``x1``.

**Mark** (servers, at release). The owner also gives each image three 16-byte mark keys;
key ``j`` goes to the two servers holding component ``j``. For recipient ``u``, component
``j`` of the mark is ``P_j = rint(AMPLITUDE * bilinear(c_j))`` where ``c_j`` is a grid of
+-1 chips (one per ``cell`` x ``cell`` pixels, cell >= MIN_CELL, about GRID cells across)
drawn by AES-CTR from ``HMAC-SHA256(key_j, u)``; the same value is added to R, G and B. A
server adds ``P_j`` to each component ``j`` it holds and seals ``(x_i + P_i, x_{i+1} +
P_{i+1})`` to the recipient (HPKE, as ``wire.key_delivery``; the associated data binds server,
image, copy, recipient and shape). No server knows the third component of the mark, so
none can make or strip the whole pattern; the recipient sees ``x + P`` and nothing else.
The mark is low-frequency (smooth over cells of >= 8 pixels), which JPEG and resizing keep.
All mark arithmetic is element-wise float64 then ``rint`` so both holders of a component
compute the same integers bit for bit.

**Reconstruction** (recipient). Every component arrives from two servers; they must agree
(:class:`PixelShareError` names the suspects otherwise); ``x + P`` (mod 2^9) is read as
signed and clipped to [0, 255].
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols.prf import PRG

from .key_delivery import hpke_open, hpke_seal

SEED_BYTES = 16
GRID = 32  # about this many mark cells across the longer side
MIN_CELL = 8  # pixels: smaller cells would not survive a 50% resize + JPEG
AMPLITUDE = 1.5  # grey levels per component (three components: mark RMS about 2 grey levels)
INFO = b"trivault/v2/pixel-shares"
BITS = 9
MASK = (1 << BITS) - 1


class PixelShareError(ValueError):
    """Sealed pixel shares could not be opened or do not agree; ``suspects`` names servers."""

    def __init__(self, message: str, suspects: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.suspects = suspects


Component = bytes | np.ndarray  # a 16-byte seed or a [H, W, 3] uint16 array of values < 2^9


def packed_size(shape: Sequence[int]) -> int:
    """Bytes of one packed component: ``n`` low bytes + ``ceil(n / 8)`` bytes of ninth bits."""
    n = int(np.prod([int(d) for d in shape]))
    return n + (n + 7) // 8


def pack(values: np.ndarray) -> bytes:
    """Values in Z_2^9 (any integer array, reduced mod 2^9) -> :func:`packed_size` bytes."""
    v = np.ascontiguousarray(values, dtype=np.uint16).reshape(-1) & MASK
    return (v & 0xFF).astype(np.uint8).tobytes() + np.packbits((v >> 8).astype(np.uint8), bitorder="little").tobytes()


def unpack(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack`: a ``shape`` uint16 array of values < 2^9."""
    n = shape[0] * shape[1] * shape[2]
    if len(data) != packed_size(shape):
        raise ValueError(f"a packed pixel share of shape {shape} has {packed_size(shape)} bytes, got {len(data)}")
    buf = np.frombuffer(data, dtype=np.uint8)
    high = np.unpackbits(buf[n:], count=n, bitorder="little").astype(np.uint16)
    return (buf[:n].astype(np.uint16) | (high << 8)).reshape(shape)


def expand(component: Component, shape: tuple[int, int, int]) -> np.ndarray:
    """A component as a uint16 array of values < 2^9 (a seed is expanded by AES-CTR)."""
    if isinstance(component, np.ndarray):
        if component.shape != shape or component.dtype != np.uint16 or int(component.max(initial=0)) > MASK:
            raise ValueError(f"pixel share component must be {shape} values < 2^{BITS}, got {component.dtype} "
                             f"{component.shape}")
        return component
    if len(component) != SEED_BYTES:
        raise ValueError(f"a seeded component has a {SEED_BYTES}-byte seed")
    size = packed_size(shape)
    return unpack(bytes(PRG(bytes(component)).bytes(size)[:size]), shape)


def split_pixels(rgb: np.ndarray) -> list[tuple[Component, Component]]:
    """Owner side: the component pair ``(x_i, x_{i+1})`` of each server ``i`` (two seeds, one array)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"pixel shares take an [H, W, 3] uint8 image, got {rgb.dtype} {rgb.shape}")
    shape = tuple(rgb.shape)
    s0, s1 = os.urandom(SEED_BYTES), os.urandom(SEED_BYTES)
    x2 = (rgb.astype(np.uint16) - expand(s0, shape) - expand(s1, shape)) & MASK
    comps: list[Component] = [s0, s1, x2]
    return [(comps[i], comps[(i + 1) % 3]) for i in range(3)]


def new_mark_keys() -> list[bytes]:
    """Three fresh mark keys; key ``j`` belongs with component ``j``."""
    return [os.urandom(SEED_BYTES) for _ in range(3)]


def grid_shape(h: int, w: int) -> tuple[int, int, int]:
    """(cell size in pixels, grid rows, grid columns) of the mark for an H x W image."""
    cell = max(MIN_CELL, math.ceil(max(h, w) / GRID))
    return cell, (h - 1) // cell + 2, (w - 1) // cell + 2


def chips(mark_key: bytes, recipient: str, rows: int, cols: int) -> np.ndarray:
    """The +-1 chip grid of one component for ``recipient`` (float64 [rows, cols])."""
    seed = hmac.new(mark_key, b"trivault/v1/mark/" + recipient.encode(), hashlib.sha256).digest()[:SEED_BYTES]
    n = rows * cols
    bits = np.unpackbits(np.frombuffer(bytes(PRG(seed).bytes((n + 7) // 8)[: (n + 7) // 8]), dtype=np.uint8))[:n]
    return (bits.astype(np.float64) * 2.0 - 1.0).reshape(rows, cols)


def mark_component(mark_key: bytes, recipient: str, h: int, w: int) -> np.ndarray:
    """Component ``P_j`` of the recipient's mark: int64 [H, W], smooth (bilinear over the chip grid)."""
    cell, rows, cols = grid_shape(h, w)
    g = chips(mark_key, recipient, rows, cols)
    fy, fx = np.arange(h, dtype=np.float64) / cell, np.arange(w, dtype=np.float64) / cell
    ky, kx = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    ty, tx = (fy - ky)[:, None], (fx - kx)[None, :]
    top = (1.0 - tx) * g[ky][:, kx] + tx * g[ky][:, kx + 1]
    bottom = (1.0 - tx) * g[ky + 1][:, kx] + tx * g[ky + 1][:, kx + 1]
    return np.rint(AMPLITUDE * ((1.0 - ty) * top + ty * bottom)).astype(np.int64)


def mark(mark_keys: Sequence[bytes], recipient: str, h: int, w: int) -> np.ndarray:
    """The whole mark ``P = P_0 + P_1 + P_2`` (only the owner, who has all keys, computes it)."""
    return sum((mark_component(k, recipient, h, w) for k in mark_keys), np.zeros((h, w), np.int64))


def aad(server_id: int, image_id: int, deid: bool, recipient: str, shape: Sequence[int]) -> bytes:
    """Associated data a sealed pixel-share pair is bound to."""
    dims = "x".join(str(int(d)) for d in shape)
    return (f"trivault/v2/pixel-shares/server={int(server_id)}/image={int(image_id)}/"
            f"kind={'deid' if deid else 'orig'}/to={recipient}/shape={dims}").encode()


def release(server_id: int, pair: tuple[Component, Component], mark_keys: tuple[bytes, bytes], recipient: str,
            recipient_kex_pub: bytes, image_id: int, deid: bool, shape: tuple[int, int, int]) -> bytes:
    """Server side: add this server's two mark components to its pair and seal it to the recipient."""
    h, w, _ = shape
    out = []
    for comp, key in zip(pair, mark_keys):
        p = mark_component(key, recipient, h, w).astype(np.uint16)[:, :, None]  # wraps; reduced mod 2^9 by pack
        out.append(pack(expand(comp, shape) + p))
    return hpke_seal(b"".join(out), recipient_kex_pub, INFO, aad(server_id, image_id, deid, recipient, shape))


def open_pair(sealed: bytes, recipient_sk: X25519PrivateKey, server_id: int, image_id: int, deid: bool,
              recipient: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Recipient side: one server's marked pair; PixelShareError names it if it fails to open."""
    size = packed_size(shape)
    pt = hpke_open(sealed, recipient_sk, INFO, aad(server_id, image_id, deid, recipient, shape))
    if pt is None:
        raise PixelShareError(f"sealed pixel shares from server {server_id} failed authentication", (server_id,))
    if len(pt) != 2 * size:
        raise PixelShareError(f"server {server_id} sent pixel shares of the wrong size", (server_id,))
    return unpack(pt[:size], shape), unpack(pt[size:], shape)


def pairs_shape(pairs: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> tuple[int, ...]:
    """The image shape of the first pair present."""
    return next(p[0].shape for p in pairs if p is not None)


def reconstruct(pairs: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> np.ndarray:
    """Recipient side: check each component against its second holder, sum, clip to RGB uint8."""
    if sum(p is not None for p in pairs) < 2:
        raise PixelShareError("at least two servers must release pixel shares",
                              tuple(i for i, p in enumerate(pairs) if p is None))
    comps: list[np.ndarray | None] = [None] * 3
    bad: list[int] = []
    for i, p in enumerate(pairs):
        if p is None:
            continue
        for j, arr in ((i, p[0]), ((i + 1) % 3, p[1])):
            seen = comps[j]
            if seen is not None and not np.array_equal(seen, arr):
                bad.append(j)
            comps[j] = arr
    if bad:  # component j is held by servers j-1 and j; two bad components share one server
        holders = [{(j - 1) % 3, j} for j in bad]
        common = set.intersection(*holders)
        names = "; ".join(f"servers {(j - 1) % 3} and {j} disagree on pixel share {j}" for j in bad)
        if len(common) == 1:
            names += f"; server {min(common)} is in every disagreeing pair"
        raise PixelShareError(names, tuple(sorted(common or set.union(*holders))))
    total = np.zeros(pairs_shape(pairs), np.int32)
    for c in comps:
        assert c is not None  # two servers' pairs cover all three components
        total += c
    total &= MASK  # x + P mod 2^9; x + P is in -6..261, so values from 384 up are negative
    return np.clip(np.where(total >= 384, total - (MASK + 1), total), 0, 255).astype(np.uint8)
