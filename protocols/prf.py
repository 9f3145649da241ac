"""Cryptographic PRG (AES-128-CTR) and the pairwise keys that give correlated randomness.

Each pair of parties shares a 16-byte key. Party ``i`` holds ``prev`` (shared with party
``i-1``) and ``next`` (shared with party ``i+1``). Both holders of a key draw the same
stream as long as they request the same amounts in the same order, which every protocol
here does (data-independent control flow). From these streams come, with no messages:

* zero-sharings ``a0 + a1 + a2 = 0``: party ``i`` uses ``next - prev``;
* random replicated sharings: component ``x_i`` (held by parties ``i-1`` and ``i``) is
  drawn from the key of that pair.

``torch.Generator`` is not a cryptographic PRG and is never used for secrets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 16
_ZEROS = bytes(1 << 20)


class PRG:
    """A stateful AES-128-CTR keystream, read as int64 words.

    ``PRG(key).int64(shape)`` returns uniformly random ring elements. Two PRGs built
    from the same key and nonce produce identical streams.
    """

    def __init__(self, key: bytes, nonce: bytes = bytes(16)) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"PRG key must be {KEY_BYTES} bytes, got {len(key)}")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def bytes(self, n: int) -> bytearray:
        """``n`` pseudo-random bytes (fresh buffer)."""
        out = bytearray(n + 15)
        self._into(out, n)
        return out

    def _into(self, out: bytearray | memoryview, n: int) -> None:
        """The next ``n`` bytes of the keystream into ``out`` (at least ``n + 15`` bytes: AES-CTR's
        ``update_into`` asks for a block of slack)."""
        global _ZEROS
        if n > len(_ZEROS):
            _ZEROS = bytes(max(n, 2 * len(_ZEROS)))
        written = self._enc.update_into(memoryview(_ZEROS)[:n], out)
        assert written == n

    def fill(self, out: np.ndarray, n: int) -> None:
        """The next ``n`` bytes of the keystream into the first ``n`` bytes of the uint8 array ``out`` (of at
        least ``n + 15`` bytes): no allocation."""
        if out.dtype != np.uint8 or out.size < n + 15:
            raise ValueError(f"PRG.fill: need a uint8 array of at least {n + 15} bytes")
        self._into(out.data, n)

    def int64(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform elements of Z_2^64 as an int64 tensor of ``shape``."""
        shape = tuple(shape)
        n = 1
        for s in shape:
            n *= s
        if n == 0:
            return torch.zeros(shape, dtype=torch.int64)
        # Not zeroed first (the keystream overwrites it): a 235 MB draw took 0.06 s against 0.16 s into a
        # zeroed bytearray (2-core EPYC, 2026-12-04; numpy also asks the kernel for huge pages).
        buf = np.empty(8 * n + 15, dtype=np.uint8)
        self._into(buf.data, 8 * n)
        return torch.from_numpy(buf[: 8 * n].view(np.int64)).view(shape)


def keystream_blocks(key: bytes, items: int, words_per_item: int, block_items: int) -> Iterator[tuple[int, np.ndarray]]:
    """A keystream under ``key`` cut into blocks of ``block_items`` items of ``words_per_item`` int64 words, each
    regenerable alone: block ``b`` is the AES-CTR stream from counter ``b * 2^64``. Yields ``(first item,
    words [m * words_per_item])`` in order, in ONE buffer reused (read it before the next); no other memory."""
    m_max = min(block_items, items)
    buf = np.empty(8 * words_per_item * m_max + 15, dtype=np.uint8)
    for b, i0 in enumerate(range(0, items, block_items)):
        n = 8 * words_per_item * min(block_items, items - i0)
        PRG(key, nonce=b.to_bytes(8, "big") + bytes(8)).fill(buf, n)
        yield i0, buf[:n].view(np.int64)


def random_key() -> bytes:
    """A fresh key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def derive_key(master: bytes, label: str) -> bytes:
    """Derive an independent key for ``label`` (e.g. a session id) with HKDF-SHA256."""
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=label.encode()).derive(
        master
    )


@dataclass(frozen=True)
class PairwiseKeys:
    """One party's two pairwise keys: ``prev`` shared with party i-1, ``next`` with i+1."""

    prev: bytes
    next: bytes

    def for_session(self, session_id: str) -> PairwiseKeys:
        """Keys for one protocol session, so concurrent sessions draw independent streams."""
        return PairwiseKeys(derive_key(self.prev, session_id), derive_key(self.next, session_id))

    def fingerprint(self) -> str:
        """A short non-secret id for logs (hash of both keys)."""
        return hashlib.sha256(self.prev + self.next).hexdigest()[:12]


def dealerless_trio_keys(seed: int | None = None) -> list[PairwiseKeys]:
    """Keys for three in-process parties: key ``k[i]`` is shared by parties i and i+1.

    ``seed`` makes them reproducible, FOR TESTS ONLY (a seeded key is not secret).
    """
    if seed is None:
        k = [random_key() for _ in range(3)]
    else:
        master = hashlib.sha256(f"trivault-test-seed-{seed}".encode()).digest()
        k = [derive_key(master, f"pair-{i}") for i in range(3)]
    return [PairwiseKeys(prev=k[(i - 1) % 3], next=k[i]) for i in range(3)]
