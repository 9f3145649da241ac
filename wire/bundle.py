"""Bundles: named tensors + public metadata streamed as chunked ``Frame`` messages.

A bundle is a header (kind, session id, JSON metadata, tensor specs) followed by the
tensors' raw bytes in header order, cut into chunks of ``CHUNK_BYTES``. Only int64 (ring
elements) and uint8 (ciphertexts) are allowed: no pickle, nothing executable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from protos.trivault.v1 import trivault_pb2 as pb

from .options import CHUNK_BYTES, MAX_BUNDLE_BYTES

_DTYPES: dict[str, np.dtype] = {"int64": np.dtype("<i8"), "uint8": np.dtype("u1")}


class BundleError(ValueError):
    """A malformed or oversized bundle."""


@dataclass
class Bundle:
    """Decoded bundle: ``kind``, ``session_id``, ``meta`` (public) and ``tensors``."""

    kind: str
    session_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    auth: bytes = b""  # a signed request (wire.signing) authorising this bundle

    def nbytes(self) -> int:
        """Total tensor payload in bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _as_array(t: torch.Tensor | np.ndarray | bytes) -> np.ndarray:
    if isinstance(t, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(t), dtype=np.uint8)
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if a.dtype == np.int64:
        return np.ascontiguousarray(a, dtype="<i8").reshape(a.shape)  # keeps 0-d tensors 0-d
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a).reshape(a.shape)
    raise BundleError(f"bundles carry int64 or uint8 tensors, got {a.dtype}")


def encode(bundle: Bundle, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.Frame]:
    """Yield the frames of ``bundle`` (header first, then chunks)."""
    arrays = {k: _as_array(v) for k, v in bundle.tensors.items()}
    specs = [
        pb.TensorSpec(name=k, dtype="int64" if a.dtype != np.uint8 else "uint8", shape=list(a.shape), nbytes=a.nbytes)
        for k, a in arrays.items()
    ]
    header = pb.BundleHeader(
        kind=bundle.kind, session_id=bundle.session_id, meta_json=json.dumps(bundle.meta), tensors=specs,
        auth=bundle.auth,
    )
    yield pb.Frame(header=header)
    buf = bytearray()
    for a in arrays.values():
        mv = memoryview(a.reshape(-1).view(np.uint8).data)
        pos = 0
        while pos < len(mv):
            take = min(chunk_bytes - len(buf), len(mv) - pos)
            buf += mv[pos : pos + take]
            pos += take
            if len(buf) == chunk_bytes:
                yield pb.Frame(chunk=bytes(buf))
                buf = bytearray()
    if buf:
        yield pb.Frame(chunk=bytes(buf))


def decode(frames: Iterable[pb.Frame], max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Assemble a bundle from frames; raises BundleError on any inconsistency."""
    it = iter(frames)
    first = next(it, None)
    if first is None or first.WhichOneof("body") != "header":
        raise BundleError("bundle must start with a header frame")
    h = first.header
    total = 0
    for s in h.tensors:
        if s.dtype not in _DTYPES:
            raise BundleError(f"tensor {s.name!r}: unsupported dtype {s.dtype!r}")
        n = int(np.prod(s.shape, dtype=np.int64)) if len(s.shape) else 1
        if any(d < 0 for d in s.shape) or n * _DTYPES[s.dtype].itemsize != s.nbytes:
            raise BundleError(f"tensor {s.name!r}: shape {list(s.shape)} does not match {s.nbytes} bytes")
        total += s.nbytes
    if total > max_bytes:
        raise BundleError(f"bundle declares {total} bytes, limit is {max_bytes}")
    data = bytearray()
    for f in it:
        if f.WhichOneof("body") != "chunk":
            raise BundleError("unexpected second header in bundle")
        data += f.chunk
        if len(data) > total:
            raise BundleError(f"bundle carries more than the {total} bytes declared")
    if len(data) != total:
        raise BundleError(f"bundle truncated: got {len(data)} of {total} bytes")
    try:
        meta = json.loads(h.meta_json) if h.meta_json else {}
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle metadata is not JSON: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    pos = 0
    for s in h.tensors:
        a = np.frombuffer(data, dtype=_DTYPES[s.dtype], count=s.nbytes // _DTYPES[s.dtype].itemsize, offset=pos)
        tensors[s.name] = torch.from_numpy(a.copy().reshape(tuple(s.shape)))
        pos += s.nbytes
    return Bundle(h.kind, h.session_id, meta, tensors, bytes(h.auth))


def pairs_to_tensors(prefix: str, pair: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{prefix.lo, prefix.hi}`` from a share pair."""
    return {f"{prefix}.lo": pair[0], f"{prefix}.hi": pair[1]}


def tensors_to_pair(tensors: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pairs_to_tensors`; raises BundleError when missing or mismatched."""
    try:
        lo, hi = tensors[f"{prefix}.lo"], tensors[f"{prefix}.hi"]
    except KeyError:
        raise BundleError(f"bundle lacks the share pair {prefix!r}") from None
    if lo.dtype != torch.int64 or lo.shape != hi.shape:
        raise BundleError(f"share pair {prefix!r}: lo/hi must be int64 of one shape")
    return lo, hi
