"""Content digest of a transaction bundle: what the owner signs at prepare, commit and abort.

``bundle_digest`` is SHA-256 over a domain tag, the bundle kind and transaction id, the
canonical JSON of its public meta, and every tensor (sorted by name: name, dtype, shape,
little-endian bytes). Client and server compute it from the same bundle (before encoding /
after decoding), so a server can check that what it staged is exactly what the owner
signed; each server gets its own share pairs, so the owner signs the list of the three
digests (``txn_digests``) and server ``i`` checks entry ``i``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch

from .bundle import Bundle

DOMAIN = b"trivault/v1/txn-digest\x00"


def _array(t: torch.Tensor | np.ndarray | bytes) -> np.ndarray:
    if isinstance(t, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(t), dtype=np.uint8)
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def bundle_digest(b: Bundle) -> str:
    """Hex SHA-256 of one bundle's kind, id, meta and tensors (order-independent in the tensors)."""
    h = hashlib.sha256(DOMAIN)
    head = {"kind": b.kind, "session_id": b.session_id, "meta": b.meta,
            "tensors": {k: [str(_array(v).dtype.name), list(_array(v).shape)] for k, v in b.tensors.items()}}
    h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(b.tensors):
        a = _array(b.tensors[name])
        h.update(len(name).to_bytes(4, "little") + name.encode() + a.nbytes.to_bytes(8, "little"))
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def txn_digests(bundles: Sequence[Bundle]) -> list[str]:
    """The three per-server digests of one transaction (``bundles[i]`` goes to server ``i``)."""
    return [bundle_digest(b) for b in bundles]
