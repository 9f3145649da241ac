"""Secure CNN inference: a model split by ``client.model.split_model``, evaluated on shares.

Each server builds ``SecureModel.from_shares(party, arch, weights)`` from the PUBLIC
architecture description and its own RSS weight pairs, then runs ``forward`` on a
secret-shared image batch [N, 3, H, W] (fixed point) and obtains RSS shares of the
feature rows [N, d], which go straight into secure search. No server sees the weights,
the pixels or the features; the control flow depends only on the public architecture.

Cost of a forward pass (per party): 1 round per conv/linear (+ bias, padding: local);
9 rounds per ReLU/ReLU6 layer; 9 per level of a max-pool tournament; 1 per average
pool; 21 for the final L2 normalisation (EfficientNet-Lite0: 368 rounds in all).
Communication: 1 ring element per output element of every conv/linear/pool; per ReLU6
element 2 bounded comparisons (about 2 x 3.7 words "fast" / 2 x 5.5 "exact") plus bit
injection (party 0: 4 elements) and 1 product element per comparison -- see
:mod:`protocols.nn_layers` and :mod:`protocols.approx`.
Accuracy: features within ~5e-4 of plaintext torch (measured 1.7e-4 at 128 px, 4.3e-4 at
224 px). Truncation after each conv is probabilistic (``arithmetic.reshare_truncate``):
summing ``|z| / 2**63`` over every conv output of EfficientNet-Lite0 on a real photo gives
an expected 0.006 (224 px) / 0.002 (128 px) large-error events per inference; none was
observed in our runs. ``comparisons`` counts the secure comparisons used; ``profile`` the time, rounds and
bytes per layer type. Batching: several images run in one pass (same rounds).
"""

from __future__ import annotations

import time
from typing import Any

from . import approx
from . import nn_layers as L
from .party import Party
from .sharing import ArithmeticShares, SharePair, from_pair

# How ReLU / ReLU6 / max-pool compare (see protocols.approx.Lanes):
#  "exact": sign from two exact 32-bit lanes per word; needs |x| < 32768.
#  "fast":  sign of x >> 6 in three 21-bit lanes per word (about 1.5-1.9x faster); needs
#           |x| < ~1024 and may treat 0 <= x < 2**-9 as negative, so a ReLU/ReLU6/max
#           output can be off by at most 2**-9 ~ 0.002 next to a kink (0 or 6).
COMPARISON_MODES = {"exact": approx.EXACT, "fast": approx.FAST}

SUPPORTED = {
    "conv2d", "linear", "affine", "pad", "clamp", "relu", "maxpool2d", "avgpool2d",
    "global_avgpool", "flatten", "residual", "l2norm",
}


class SecureModel:
    """A party's secure model: public ``arch`` + this party's weight shares."""

    def __init__(
        self, party: Party, arch: dict, weights: dict[str, ArithmeticShares], comparison: str = "fast"
    ) -> None:
        if comparison not in COMPARISON_MODES:
            raise ValueError(f"comparison must be one of {sorted(COMPARISON_MODES)}, got {comparison!r}")
        self.lanes = COMPARISON_MODES[comparison]
        self.party = party
        self.arch = arch
        self.weights = weights
        self.frac_bits = int(arch.get("frac_bits", party.fp.frac_bits))
        self.comparisons = 0
        self.profile: dict[str, dict[str, float]] = {}
        self._check(arch["layers"])

    @classmethod
    def from_shares(
        cls, party: Party, arch: dict, weights: dict[str, SharePair], comparison: str = "fast"
    ) -> "SecureModel":
        """Wrap this party's weight pairs (from ``split_model``) as shares. Cost: local.

        ``comparison``: ``"fast"`` (default) or ``"exact"``, see ``COMPARISON_MODES``.
        """
        fb = int(arch.get("frac_bits", party.fp.frac_bits))
        return cls(party, arch, {k: from_pair(party, v, fb) for k, v in weights.items()}, comparison)

    def _check(self, layers: list[dict]) -> None:
        for s in layers:
            t = s.get("type")
            if t not in SUPPORTED:
                raise ValueError(f"unsupported layer type {t!r} in architecture")
            if t == "residual":
                self._check(s["body"])
            name = s.get("name")
            if t in ("conv2d", "linear", "affine"):
                for part in ("weight",) + (("bias",) if s.get("bias", t == "affine") else ()):
                    if f"{name}.{part}" not in self.weights:
                        raise ValueError(f"missing weight share {name}.{part}")
                    want = None
                    if part == "weight" and t == "conv2d":
                        want = (s["out_channels"], s["in_channels"] // s["groups"], *s["kernel_size"])
                    elif part == "weight" and t == "linear":
                        want = (s["out_features"], s["in_features"])
                    got = tuple(self.weights[f"{name}.{part}"].shape)
                    if want is not None and got != want:
                        raise ValueError(f"weight share {name}.{part} has shape {got}, architecture says {want}")

    def _w(self, name: str, part: str) -> ArithmeticShares | None:
        return self.weights.get(f"{name}.{part}")

    def _layer(self, s: dict, x: ArithmeticShares) -> ArithmeticShares:
        t = s["type"]
        if t == "conv2d":
            return L.conv2d(x, s, self._w(s["name"], "weight"), self._w(s["name"], "bias") if s["bias"] else None)
        if t == "linear":
            return L.linear(x, self._w(s["name"], "weight"), self._w(s["name"], "bias") if s["bias"] else None)
        if t == "affine":
            return L.affine(x, self._w(s["name"], "weight"), self._w(s["name"], "bias"))
        if t == "pad":
            return L.pad(x, s["pad"])
        if t == "clamp":
            self.comparisons += 2 * x.numel()
            return L.clamp(x, s["min"], s["max"], self.lanes)
        if t == "relu":
            self.comparisons += x.numel()
            return L.relu(x, self.lanes)
        if t == "maxpool2d":
            y = L.maxpool2d(x, s, self.lanes)
            self.comparisons += y.numel() * (s["kernel_size"][0] * s["kernel_size"][1] - 1)
            return y
        if t == "avgpool2d":
            return L.avgpool2d(x, s)
        if t == "global_avgpool":
            return L.global_avgpool(x, s["keepdim"])
        if t == "flatten":
            return x.flatten(1)
        if t == "l2norm":
            self.comparisons += approx.l2_comparisons(x.shape[0])
            return approx.l2_normalize(x)
        if t == "residual":
            return x + self._run(s["body"], x)
        raise ValueError(f"unsupported layer type {t!r}")

    def _run(self, layers: list[dict], x: ArithmeticShares) -> ArithmeticShares:
        for s in layers:
            if s["type"] == "residual":
                x = self._layer(s, x)
                continue
            before = self.party.comm.stats.snapshot()
            t0 = time.perf_counter()
            x = self._layer(s, x)
            d = self.party.comm.stats.snapshot() - before
            p = self.profile.setdefault(s["type"], {"seconds": 0.0, "rounds": 0, "bytes_sent": 0, "calls": 0})
            p["seconds"] += time.perf_counter() - t0
            p["rounds"] += d.rounds
            p["bytes_sent"] += d.bytes_sent
            p["calls"] += 1
        return x

    def forward(self, x: ArithmeticShares) -> ArithmeticShares:
        """Secure inference on a shared batch [N, C, H, W] -> shared outputs (e.g. features [N, d]).

        Cost: see the module docstring; rounds do not depend on N.
        """
        want = list(self.arch["input_shape"])
        if len(x.shape) != 4 or list(x.shape[1:]) != want:
            raise ValueError(f"input must be [N, {', '.join(map(str, want))}], got {list(x.shape)}")
        if x.frac_bits != self.frac_bits:
            raise ValueError(f"input has {x.frac_bits} fractional bits, model uses {self.frac_bits}")
        return self._run(self.arch["layers"], x)

    __call__ = forward

    def summary(self) -> dict[str, Any]:
        """Non-secret counters: comparisons and the per-layer-type profile."""
        return {"comparisons": self.comparisons, "profile": self.profile}
