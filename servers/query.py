"""One secure query on one party: secure CNN -> secure search. Shared by the gRPC server
and the in-process benchmark, so both run exactly the same function.

* CNN: ``protocols.nn.SecureModel`` (every layer through the registry
  ``protocols.layers.LAYERS``; an unsupported layer is refused, never approximated).
* Search: the index is always the padded IVF layout (``protocols.layout.IndexShares``; an
  empty index is one with no items) and runs ``protocols.search.secure_search``: shared
  top-k ids and distances, nothing revealed to the servers or beyond the k results to
  the querier.

Malicious mode (``[security] mode = "malicious"``, ``servers.config``): the caller passes one
``protocols.dzk.ProductLog`` for the whole session and :func:`run_query` runs the checked
versions instead, recording every product and AND gate in it: the CNN by
``protocols.checked_nn.checked_forward`` (the same log, proved once with the rest: its batches bound
the proof's memory), the search by ``protocols.checked_search.checked_search``,
the masking (``servers.vault``) by ``checked_search.checked_mask_hidden``. The caller runs
``verify_products`` on the log before any output pair leaves the server (``servers.vault``).
Same inputs, same meaning of the output pairs, same error bound as the semi-honest path (one
ulp per truncation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from protocols.checked_nn import checked_forward
from protocols.checked_search import checked_search
from protocols.compare import eq
from protocols.dzk import ProductLog
from protocols.layout import IndexShares
from protocols.nn import SecureModel
from protocols.party import Party
from protocols.search import secure_search
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
    shards: Any = None  # a servers.sharded_search.ShardedIndex when the buckets live on Ray shard actors


def secure_features(party: Party, model: LoadedModel, x: ArithmeticShares) -> ArithmeticShares:
    """Shared image batch [N,3,H,W] -> shared features [N,d]."""
    want = list(model.arch["input_shape"])
    if list(x.shape[1:]) != want:
        raise QueryError(f"query image shape {list(x.shape[1:])} does not match the model input {want}")
    try:
        secure = SecureModel.from_shares(party, model.arch, model.weights)
    except ValueError as exc:  # unsupported layer or weight shares that do not fit the architecture
        raise QueryError(f"the registered model cannot run: {exc}") from exc
    return secure.forward(x)


def checked_features(party: Party, model: LoadedModel, x: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """Malicious mode: :func:`secure_features` by the checked CNN (``checked_nn.checked_forward``),
    every message recorded in ``log``, proved with the search's in the session's one ``verify_products`` call
    (memory-bounded batches, ``protocols.dzk.FIELD_BATCH``; no proof per layer: 40 to 60 rounds each)."""
    want = list(model.arch["input_shape"])
    if list(x.shape[1:]) != want:
        raise QueryError(f"query image shape {list(x.shape[1:])} does not match the model input {want}")
    f = int(model.arch.get("frac_bits", party.fp.frac_bits))
    weights = {name: from_pair(party, pair, f) for name, pair in model.weights.items()}
    try:
        return checked_forward(model.arch, weights, x, log)
    except (NotImplementedError, KeyError, ValueError) as exc:  # no checked version of a layer, or bad weights
        raise QueryError(f"the registered model cannot run in malicious mode: {exc}") from exc


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
    h = torch.tensor(sorted(set(hidden)), dtype=torch.int64)
    shape = tuple(ids.shape) + (len(h),)
    bad = eq(ids.unsqueeze(-1).expand(*shape), h.expand(*shape)).sum(-1)
    ok = 1 - bad
    return (ok * ids.add_public(1)).add_public(-1), ok * dist


def run_query(party: Party, model: LoadedModel | None, index: LoadedIndex, query: SharePair, k: int,
              nprobe: int = 1, input_kind: str = "image",
              log: ProductLog | None = None) -> tuple[str, dict[str, SharePair]]:
    """Run one query on ``party``; returns ``("topk", {"ids": pair, "dist": pair})`` for the querier.

    ``query``: this party's pair of the image batch ``[N, 3, H, W]`` (``input_kind="image"``,
    run through the registered model) or of feature rows ``[Q, d]`` (``"features"``), fixed
    point. ``k``/``nprobe``: results and probed buckets of ``secure_search``. Ids the requester
    may not see are masked afterwards by the servicer (:func:`mask_hidden`). Raises
    :class:`QueryError` for a query the servers cannot run.

    ``log``: malicious mode (module docstring): the checked CNN and search record into it, and
    the caller must ``verify_products(log)`` before the returned pairs leave the server.
    """
    f = party.fp.frac_bits
    x = from_pair(party, query, f)
    if input_kind == "image":
        if model is None:
            raise QueryError("no model registered: upload one with Client.register_model")
        if len(x.shape) != 4:
            raise QueryError(f"query image shares must be [N,3,H,W], got {list(x.shape)}")
        feats = secure_features(party, model, x) if log is None else checked_features(party, model, x, log)
    elif input_kind == "features":
        if len(x.shape) != 2:
            raise QueryError(f"query feature shares must be [Q,d], got {list(x.shape)}")
        feats = x
    else:
        raise QueryError(f"unknown query input {input_kind!r}")
    fmt = index.meta.get("format")
    if fmt != "ivf":
        raise QueryError(f"unknown index format {fmt!r} (only the padded IVF index is served)")
    if log is not None:  # malicious mode: the checked search, proved by the caller before the output leaves
        if index.shards is not None:
            raise QueryError("malicious mode does not run on shard actors yet (servers.config refuses it)")
        ids, dist = checked_search(party, feats, IndexShares.from_tensors(index.tensors), k, nprobe, log)
    elif index.shards is not None:  # the same protocol, the bucket products on this server's shard actors
        ids, dist = index.shards.search(party, feats, k, nprobe=nprobe)
    else:
        ids, dist = secure_search(party, feats, IndexShares.from_tensors(index.tensors), k, nprobe=nprobe)
    return "topk", {"ids": output_pair(ids), "dist": output_pair(dist)}
