"""One secure query on one party: secure CNN -> secure search. Shared by the gRPC server
and the in-process benchmark, so both run exactly the same function.

* CNN: ``protocols.nn.SecureModel`` when that module exists; until then a small built-in
  evaluator covers conv2d / linear / relu / flatten / global_avgpool with the core's
  ``conv2d``, ``matmul`` and ``relu`` (anything else is refused, never approximated).
* Search: an ``ivf`` index runs ``protocols.search.secure_search`` (shared top-k ids and
  distances). A ``flat`` index (fallback while secure search is not merged) computes the
  shared squared distances to every row, ``||q||^2 - 2 q.X + ||X||^2``; the querier
  reconstructs and ranks them (servers still learn nothing; the querier learns all N
  distances, which is why ``ivf`` replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from protocols.arithmetic import conv2d, matmul, mul_public
from protocols.compare import relu
from protocols.party import Party
from protocols.sharing import ArithmeticShares, SharePair, from_pair, output_pair


class QueryError(ValueError):
    """A query the servers cannot run (no model/index, bad shape, unsupported layer)."""


@dataclass
class LoadedModel:
    """A registered model on one server: public arch + this server's weight pairs."""

    version: int
    arch: dict[str, Any]
    weights: dict[str, SharePair]


@dataclass
class LoadedIndex:
    """The current index on one server: format, public meta and this server's tensors."""

    version: int
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)


def _weights_of(weights: dict[str, SharePair], name: str) -> dict[str, SharePair]:
    return {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(name + ".")}


def _fallback_forward(party: Party, arch: dict, weights: dict[str, SharePair], x: ArithmeticShares) -> ArithmeticShares:
    """Secure forward of the simple layers (used only while protocols.nn is absent)."""
    f = int(arch.get("frac_bits", party.fp.frac_bits))
    for spec in arch["layers"]:
        t = spec["type"]
        p = {k: from_pair(party, v, f) for k, v in _weights_of(weights, spec.get("name", "")).items()}
        if t == "conv2d":
            x = conv2d(x, p["weight"], spec["stride"], spec["padding"], spec["dilation"], spec["groups"])
            if spec["bias"]:
                x = x + p["bias"].reshape(1, -1, 1, 1).expand(*x.shape)
        elif t == "linear":
            x = matmul(x, p["weight"].T)
            if spec["bias"]:
                x = x + p["bias"].reshape(1, -1).expand(*x.shape)
        elif t == "relu":
            x = relu(x)
        elif t == "flatten":
            x = x.flatten(1)
        elif t == "global_avgpool":
            keep = bool(spec.get("keepdim", False))
            summed = ArithmeticShares(party, x.lo.sum((2, 3), keepdim=keep), x.hi.sum((2, 3), keepdim=keep), x.frac_bits)
            x = mul_public(summed, 1.0 / (x.shape[2] * x.shape[3]))
        else:
            raise QueryError(f"layer type {t!r} needs protocols.nn (secure CNN), which is not installed")
    return x


def secure_features(party: Party, model: LoadedModel, x: ArithmeticShares) -> ArithmeticShares:
    """Shared image batch [N,3,H,W] -> shared features [N,d]."""
    want = list(model.arch["input_shape"])
    if list(x.shape[1:]) != want:
        raise QueryError(f"query image shape {list(x.shape[1:])} does not match the model input {want}")
    try:
        from protocols.nn import SecureModel  # type: ignore[import-not-found]
    except ImportError:
        return _fallback_forward(party, model.arch, model.weights, x)
    return SecureModel.from_shares(party, model.arch, model.weights).forward(x)


def _flat_search(party: Party, index: LoadedIndex, q: ArithmeticShares) -> dict[str, SharePair]:
    f = q.frac_bits
    X = from_pair(party, (index.tensors["features.lo"], index.tensors["features.hi"]), f)
    norms = from_pair(party, (index.tensors["norms.lo"], index.tensors["norms.hi"]), f)
    if q.shape[-1] != X.shape[-1]:
        raise QueryError(f"query has {q.shape[-1]} features, index has {X.shape[-1]}")
    cross = matmul(q, X.T)  # [Q, N]: 1 round, Q*N elements
    qn = (q * q).sum(1, keepdim=True)  # [Q, 1]: 1 round, Q*d elements
    dist = norms.unsqueeze(0).expand(*cross.shape) - cross.mul_public_int(2) + qn.expand(*cross.shape)
    return {"dist": output_pair(dist)}


def mask_hidden(ids: ArithmeticShares, dist: ArithmeticShares,
                hidden: list[int]) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Replace result ids the requester may not see by -1 (distance 0), obliviously.

    ``hidden`` is public (it depends on the policy and the requester, not on the query).
    ``bad = sum_j [id == hidden_j]`` (one batched secure equality), then
    ``id' = (1 - bad) (id + 1) - 1`` and ``dist' = (1 - bad) dist`` (one product round each).
    Every step is deterministic on replicated shares (the products' zero-sharings come
    from the pairwise PRF keys), so the two servers holding each output component send the
    same value: a server that skips or alters the mask is caught by the client's checked
    reconstruction (``protocols.sharing.reconstruct(check=True)``), which names it.
    """
    from protocols.compare import eq

    h = torch.tensor(sorted(set(hidden)), dtype=torch.int64)
    shape = tuple(ids.shape) + (len(h),)
    bad = eq(ids.unsqueeze(-1).expand(*shape), h.expand(*shape)).sum(-1)
    ok = 1 - bad
    return (ok * ids.add_public(1)).add_public(-1), ok * dist


def run_query(party: Party, model: LoadedModel | None, index: LoadedIndex, query: SharePair, k: int,
              nprobe: int = 1, input_kind: str = "image",
              hidden: list[int] | None = None, fault_skip_mask: bool = False) -> tuple[str, dict[str, SharePair]]:
    """Run one query on ``party``; returns (result kind, named output pairs for the querier).

    ``hidden``: public image ids the requester may not see; they never leave the servers as
    results (flat: their columns are dropped; IVF: their ids become -1 before output)."""
    f = party.fp.frac_bits
    x = from_pair(party, query, f)
    if input_kind == "image":
        if model is None:
            raise QueryError("no model registered: upload one with Client.register_model")
        if len(x.shape) != 4:
            raise QueryError(f"query image shares must be [N,3,H,W], got {list(x.shape)}")
        feats = secure_features(party, model, x)
    elif input_kind == "features":
        if len(x.shape) != 2:
            raise QueryError(f"query feature shares must be [Q,d], got {list(x.shape)}")
        feats = x
    else:
        raise QueryError(f"unknown query input {input_kind!r}")
    fmt = index.meta.get("format")
    if fmt == "flat":
        if hidden:
            keep = torch.tensor([int(i) not in set(hidden) for i in index.tensors["ids"].tolist()], dtype=torch.bool)
            t = dict(index.tensors)
            for name in ("features.lo", "features.hi", "norms.lo", "norms.hi", "ids"):
                t[name] = t[name][keep]
            index = LoadedIndex(index.version, index.meta, t)
        return "distances", _flat_search(party, index, feats)
    if fmt == "ivf":
        from index import IndexShares  # type: ignore[attr-defined]
        from protocols.search import secure_search  # type: ignore[import-not-found]

        shares = IndexShares.from_tensors(index.tensors)
        ids, dist = secure_search(party, feats, shares, k, nprobe=nprobe)
        if hidden:
            masked = mask_hidden(ids, dist, hidden)  # run the protocol either way (the peers wait for it)
            if not fault_skip_mask:  # fault injection for tests only: a server that outputs unmasked shares
                ids, dist = masked
        return "topk", {"ids": output_pair(ids), "dist": output_pair(dist)}
    raise QueryError(f"unknown index format {fmt!r}")
