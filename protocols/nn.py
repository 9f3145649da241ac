"""Secure CNN inference: a model split by ``client.model.split_model``, evaluated on shares.

Each server builds ``SecureModel.from_shares(party, arch, weights)`` from the PUBLIC
architecture description and its own RSS weight pairs, then runs ``forward`` on a
secret-shared image batch [N, 3, H, W] (fixed point) and obtains RSS shares of the
feature rows [N, d], which go straight into secure search. No server sees the weights,
the pixels or the features; the control flow depends only on the public architecture.

Every layer runs through the registry :data:`protocols.layers.LAYERS` (plaintext, secure
and cost function of each layer kind). Cost of a forward pass (per party, exact:
``protocols.layers.forward_cost``, asserted by the tests): 1 round per conv/linear/
affine/pool (bias, padding: local); ``spec.rounds + 1`` rounds per ReLU6 layer (3 "fast":
the table OT, the table gate, then ``s x`` and the injection in one round; 4 "exact"), and
``spec.rounds + 2`` per ReLU layer and level of a max-pool tournament (one less on small
layers, ``bitmul.fuse``); 12 for the final L2 normalisation. EfficientNet-Lite0, "fast":
162 rounds at any resolution; 637 MB sent per party at 224 px, 117 MB at 96 px, 52 MB at
64 px (``forward_cost``, asserted against the counters by the tests).
Communication: 1 ring element per output element of every conv/linear/pool, and per ReLU6
element 2 bounded signs (``costs.digit_msb``), 4 words for ``s x`` and 1 for injecting ``b2``.
Accuracy: features within ~5e-4 of plaintext torch (measured 1.7e-4 at 128 px, 4.3e-4 at
224 px). Truncation after each conv is probabilistic (``arithmetic.reshare_truncate``):
summing ``|z| / 2**63`` over every conv output of EfficientNet-Lite0 on a real photo gives
an expected 0.006 (224 px) / 0.002 (128 px) large-error events per inference; none was
observed in our runs. ``comparisons`` counts the secure comparisons used; ``profile`` the
time, rounds and bytes per layer type. Batching: several images run in one pass (same rounds).
"""

from __future__ import annotations

import time
from typing import Any

from . import approx
from .layers import RESIDUAL, kind_of, layer_params, walk
from .party import Party
from .sharing import ArithmeticShares, SharePair, from_pair

# How ReLU / ReLU6 / max-pool compare (see protocols.approx.Lanes):
#  "exact": sign from two exact 32-bit lanes per word; needs |x| < 32768.
#  "fast":  sign of x >> 6 in three 21-bit lanes per word (about 1.5-1.9x faster); needs
#           |x| < ~1024 and may treat 0 <= x < 2**-9 as negative, so a ReLU/ReLU6/max
#           output can be off by at most 2**-9 ~ 0.002 next to a kink (0 or 6).
COMPARISON_MODES = {"exact": approx.EXACT, "fast": approx.FAST}


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
    ) -> SecureModel:
        """Wrap this party's weight pairs (from ``split_model``) as shares. Cost: local.

        ``comparison``: ``"fast"`` (default) or ``"exact"``, see ``COMPARISON_MODES``.
        """
        fb = int(arch.get("frac_bits", party.fp.frac_bits))
        return cls(party, arch, {k: from_pair(party, v, fb) for k, v in weights.items()}, comparison)

    def _check(self, layers: list[dict]) -> None:
        for spec in layers:
            if spec.get("type") == RESIDUAL:
                self._check(spec["body"])
                continue
            for part, want in kind_of(spec).weights(spec).items():
                key = f"{spec.get('name')}.{part}"
                if key not in self.weights:
                    raise ValueError(f"missing weight share {key}")
                got = tuple(self.weights[key].shape)
                if want is not None and got != tuple(want):
                    raise ValueError(f"weight share {key} has shape {got}, architecture says {tuple(want)}")

    def _layer(self, s: dict, x: ArithmeticShares) -> ArithmeticShares:
        """One layer ``s`` through the registry, with its comparisons and profile counted.

        (``benchmarks.cost_model`` attributes rounds to CNN layers by this frame's name and ``s``.)
        """
        kind = kind_of(s)
        before = self.party.comm.stats.snapshot()
        t0 = time.perf_counter()
        self.comparisons += kind.comparisons(s, x.shape[0])
        x = kind.secure(s, layer_params(self.weights, s), x, self.lanes)
        d = self.party.comm.stats.snapshot() - before
        p = self.profile.setdefault(kind.name, {"seconds": 0.0, "rounds": 0, "bytes_sent": 0, "calls": 0})
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
        return walk(self.arch["layers"], x, self._layer)

    __call__ = forward

    def summary(self) -> dict[str, Any]:
        """Non-secret counters: comparisons and the per-layer-type profile."""
        return {"comparisons": self.comparisons, "profile": self.profile}
