"""The querier's secure search: share the preprocessed image, reconstruct the servers' top-k.

The servers run the secure CNN and the oblivious index search on the shares; each returns
its shares of the top-k ids and distances, and only this client reconstructs them. The
reconstruction of the ids is checked: a server that skipped the masking of ids hidden by
policy (or sent a wrong share) is named (``InconsistentSharesError.suspects``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from protocols.ring import DEFAULT_FP
from protocols.sharing import SharePair, reconstruct, share_fixed
from wire import bundle as bd

from .transport import Fanout, Sign
from .errors import TriVaultError
from .images import ImageInput, load_image_bytes


@dataclass
class SearchResult:
    """Reconstructed top-k ids and distances, with timing and per-server communication."""

    ids: list[int]
    distances: list[float]
    seconds: float
    server_seconds: float
    comm: list[dict[str, int]] = field(default_factory=list)
    mode: str = "topk"

    @property
    def bytes_per_party(self) -> float:
        """Mean bytes sent per server during the protocol."""
        return float(np.mean([c["bytes_sent"] for c in self.comm])) if self.comm else 0.0


def search(fan: Fanout, sign: Sign, image: ImageInput, k: int = 10, nprobe: int = 1, collection: str = "default",
           purpose: str | None = None, timeout_s: float = 60.0, progress: bool = True) -> SearchResult:
    """Secure top-k search for one query image."""
    from .preprocess import preprocess

    info = fan.info()
    if not info.get("arch"):
        raise TriVaultError("no model registered on the servers")
    res = int(info["arch"]["input_shape"][-1])
    _, im = load_image_bytes(image)
    x = preprocess(im, res).unsqueeze(0).to(torch.float64)
    if not info["image_ids"]:
        raise TriVaultError("no images uploaded yet")
    pairs = share_fixed(x, DEFAULT_FP)
    sid = str(uuid.uuid4())
    meta = {"k": int(k), "nprobe": int(nprobe), "input": "image", "index_version": info["index_version"],
            "model_version": info["model_version"]}
    t0 = time.perf_counter()
    auth = sign("search", {"session": sid, "collection": collection, "purpose": purpose, "k": int(k)})

    def one(i: int) -> bd.Bundle:
        b = bd.Bundle("search", sid, meta, bd.pairs_to_tensors("query", pairs[i]), auth)
        return bd.decode(fan.stubs[i].Search(bd.encode(b), timeout=timeout_s))

    with tqdm(total=1, desc="secure search", unit="query", disable=not progress, leave=False) as bar:
        outs = fan.all(one)
        bar.update(1)
    secs = time.perf_counter() - t0
    ids, dist = reconstruct_topk(outs)
    return SearchResult(ids, dist, secs, max(o.meta["seconds"] for o in outs), [o.meta["comm"] for o in outs],
                        outs[0].meta["result"])


def reconstruct_topk(outs: list[bd.Bundle]) -> tuple[list[int], list[float]]:
    """Ids (checked reconstruction) and distances of one query; drops -1 (padding or hidden)."""
    f = DEFAULT_FP.frac_bits
    pairs: dict[str, list[SharePair]] = {n: [bd.tensors_to_pair(o.tensors, n) for o in outs] for n in ("ids", "dist")}
    dist = reconstruct(pairs["dist"]).to(torch.float64) / (1 << f)
    ids = reconstruct(pairs["ids"], check=True)[0]  # a server that skipped the masking of hidden ids is named
    keep = [j for j, v in enumerate(ids.tolist()) if v >= 0]
    return [int(ids[j]) for j in keep], [float(dist[0][j]) for j in keep]
