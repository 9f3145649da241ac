"""Secure CNN layers and SecureModel: secure outputs equal plaintext torch (all three parties run).

Tolerances: fixed point has 16 fractional bits; each conv/linear adds about one ulp of
truncation error per output and the weights are rounded to 2**-16, so small random models
agree with torch to ~1e-3 absolute; the L2-normalised EfficientNet features to 2e-3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from client.model import (
    GlobalAvgPool,
    L2Normalize,
    Residual,
    UnsupportedLayerError,
    count_layers,
    describe_model,
    split_model,
)
from protocols import approx
from protocols.layers import SUPPORTED, forward_comparisons, forward_cost, plain_forward
from protocols.nn import COMPARISON_MODES, SecureModel
from protocols.ring import DEFAULT_FP
from protocols.sharing import from_pair, output_pair, reconstruct, reveal, share_fixed
from protocols.simulate import run_parties


def secure_forward(model: nn.Module, x: torch.Tensor, comparison: str = "fast") -> tuple[torch.Tensor, dict]:
    """Split ``model``, share ``x``, run SecureModel on three parties, reconstruct.

    The summary also holds the architecture and each party's communication counters.
    """
    arch, weights = split_model(model, tuple(x.shape[1:]))
    json.dumps(arch)  # the public description is plain JSON
    xs = share_fixed(x.double())

    def party_fn(p, w, xp):
        m = SecureModel.from_shares(p, arch, w, comparison=comparison)
        before = p.comm.stats.snapshot()
        y = m.forward(from_pair(p, xp, DEFAULT_FP.frac_bits))
        return output_pair(y), m.summary(), p.comm.stats.snapshot() - before

    out = run_parties(party_fn, [(weights[i], xs[i]) for i in range(3)])
    y = DEFAULT_FP.decode(reconstruct([o[0] for o in out]))
    return y, {**out[0][1], "arch": arch, "comm": [o[2] for o in out]}


def _init(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.5 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def every_layer_model() -> nn.Module:
    """A small CNN that uses every supported layer type."""
    return _init(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(8),  # folded into the conv
            nn.ReLU6(),
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(8, 8, 3, stride=1, groups=8),  # depthwise
            nn.BatchNorm2d(8),
            nn.ReLU(),
            Residual(nn.Sequential(nn.Conv2d(8, 16, 1), nn.Hardtanh(-1.0, 2.0), nn.Conv2d(16, 8, 1))),
            nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4),  # grouped, dilated
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.BatchNorm2d(12),  # standalone: per-channel affine
            nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
            nn.Conv2d(12, 16, 1),
            nn.AvgPool2d(2),
            nn.Dropout(0.3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
            nn.ReLU(),
            nn.Linear(10, 6),
            L2Normalize(),
        ),
        seed=1,
    )


@pytest.mark.parametrize("batch,comparison", [(1, "fast"), (3, "fast"), (2, "exact")])
def test_every_layer_matches_torch(batch: int, comparison: str) -> None:
    torch.manual_seed(batch)
    model = every_layer_model()
    x = torch.rand(batch, 3, 20, 20) * 2 - 1
    with torch.no_grad():
        ref = model(x).double()
    y, summary = secure_forward(model, x, comparison)
    assert y.shape == ref.shape
    assert (y - ref).abs().max().item() < (2e-3 if comparison == "fast" else 1e-3)
    assert summary["comparisons"] > 0


@pytest.mark.parametrize("batch,comparison", [(2, "fast"), (1, "exact")])
def test_layer_registry_cost_matches_the_counters(batch: int, comparison: str) -> None:
    """Rounds, elements sent by every party and comparisons are exactly what the registry says."""
    model = every_layer_model()
    x = torch.rand(batch, 3, 20, 20) * 2 - 1
    _, summary = secure_forward(model, x, comparison)
    arch = summary["arch"]
    assert set(count_layers(arch)) == SUPPORTED  # the model exercises every layer kind
    cost = forward_cost(arch, batch, COMPARISON_MODES[comparison])
    for pid, stats in enumerate(summary["comm"]):
        assert stats.rounds == cost.rounds
        assert stats.bytes_sent == 8 * cost.sent(pid)
    assert summary["comparisons"] == forward_comparisons(arch, batch)
    by_kind = {k: v["rounds"] for k, v in summary["profile"].items()}
    assert by_kind["l2norm"] == 12 and by_kind["conv2d"] == count_layers(arch)["conv2d"]


def test_plain_forward_of_the_registry_matches_torch() -> None:
    model = every_layer_model()
    x = torch.rand(2, 3, 20, 20) * 2 - 1
    arch, params = describe_model(model, (3, 20, 20))
    with torch.no_grad():
        ref = model(x).double()
    assert (plain_forward(arch, params, x) - ref).abs().max().item() < 1e-5  # float32 torch vs float64


def test_unnormalised_features_and_plain_layers() -> None:
    model = _init(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), GlobalAvgPool(),
                                nn.Linear(4, 3)), seed=2)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x).double()
    y, _ = secure_forward(model, x)
    assert (y - ref).abs().max().item() < 1e-3


def test_unsupported_layer_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid())
    with pytest.raises(UnsupportedLayerError, match="Sigmoid"):
        split_model(model, (3, 8, 8))
    with pytest.raises(UnsupportedLayerError, match="LayerNorm"):
        split_model(nn.Sequential(nn.Flatten(), nn.LayerNorm(12)), (3, 2, 2))


def test_input_shape_is_checked() -> None:
    model = _init(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), seed=3)
    arch, weights = split_model(model, (3, 8, 8))
    xs = share_fixed(torch.zeros(1, 3, 9, 9, dtype=torch.float64))

    def party_fn(p, w, xp):
        return SecureModel.from_shares(p, arch, w).forward(from_pair(p, xp, 16))

    with pytest.raises(Exception, match="input must be"):
        run_parties(party_fn, [(weights[i], xs[i]) for i in range(3)])


def test_server_view_of_upload_is_independent_of_weights() -> None:
    """Server 0's pairs for two very different weight sets: same shapes, uniform-looking words."""
    m1 = _init(nn.Sequential(nn.Conv2d(3, 64, 3), nn.Flatten()), seed=4)
    m2 = _init(nn.Sequential(nn.Conv2d(3, 64, 3), nn.Flatten()), seed=5)
    with torch.no_grad():
        m2[0].weight.zero_()
        m2[0].bias.fill_(1000.0)
    a1, w1 = split_model(m1, (3, 8, 8))
    a2, w2 = split_model(m2, (3, 8, 8))
    assert a1 == a2  # the public part does not depend on the weights
    assert "weight" not in json.dumps(a1).replace('"weight"', "")
    for server in range(3):
        assert w1[server].keys() == w2[server].keys()
        for k in w1[server]:
            for t1, t2 in zip(w1[server][k], w2[server][k]):
                assert t1.shape == t2.shape and t1.dtype == t2.dtype == torch.int64
        words = torch.cat([t.reshape(-1) for k in w2[server] for t in w2[server][k]])
        bits = ((words.unsqueeze(1) >> torch.arange(64)) & 1).double()
        # each of the 64 bit positions is a fair coin (n = 2 * 1792 words): 6 sigma bound
        n = words.numel()
        assert (bits.mean(0) - 0.5).abs().max().item() < 6 * 0.5 / n**0.5
    # any two servers' pairs reconstruct the weights
    w = reconstruct([w2[0]["conv2d1.bias"], w2[1]["conv2d1.bias"], None])
    assert torch.allclose(DEFAULT_FP.decode(w), torch.full((64,), 1000.0, dtype=torch.float64))


def test_bounded_comparison_exact_at_edges() -> None:
    v = torch.tensor([0.0, -2**-16, 2**-16, -32767.9, 32767.9, 6.0, -6.0, 1e-3, -1e-3] * 3 + [0.5])
    v = torch.cat([v, torch.randn(1001) * 300])
    xs = share_fixed(v)

    def party_fn(p, xp):
        return reveal(approx.ltz_bounded(from_pair(p, xp, 16)))

    out = run_parties(party_fn, [(xs[i],) for i in range(3)])
    assert torch.equal(out[0], (v < 0).long())


def test_clamp_and_max() -> None:
    v = torch.randn(4, 37) * 5
    xs = share_fixed(v)

    def party_fn(p, xp):
        x = from_pair(p, xp, 16)
        return reveal(approx.clamp(x.reshape(-1), 0.0, 6.0)), reveal(approx.max_last(x))

    out = run_parties(party_fn, [(xs[i],) for i in range(3)])
    c = DEFAULT_FP.decode(out[0][0]).view(4, 37)
    assert (c - v.double().clamp(0, 6)).abs().max().item() < 2e-5
    assert (DEFAULT_FP.decode(out[0][1]) - v.double().max(1).values).abs().max().item() < 2e-5


@pytest.mark.parametrize("scale", [0.02, 1.0, 30.0])
def test_l2_normalize_accuracy(scale: float) -> None:
    """Documented accuracy: within 4e-5 + 3e-5/||x|| of x/||x|| for 2**-8 <= ||x||**2 < 2**24."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 300, generator=g).double() * scale
    x[1] *= 10.0
    xs = share_fixed(x)

    def party_fn(p, xp):
        return reveal(approx.l2_normalize(from_pair(p, xp, 16)))

    out = run_parties(party_fn, [(xs[i],) for i in range(3)])
    y = DEFAULT_FP.decode(out[0])
    ref = x / x.norm(dim=1, keepdim=True)
    tol = 4e-5 + 3e-5 / x.norm(dim=1, keepdim=True)
    assert ((y - ref).abs() < tol).all()
    assert (y.norm(dim=1) - 1).abs().max().item() < 2e-3


def test_efficientnet_lite0_secure_features_match_plaintext() -> None:
    """The real pretrained model at 64x64, batch 2: secure features = plaintext within 2e-3."""
    from skimage import data

    from client.model import default_feature_model
    from client.preprocess import preprocess

    model = default_feature_model(64)
    x = torch.stack([preprocess(data.chelsea(), 64), preprocess(data.rocket(), 64)])
    with torch.no_grad():
        ref = model(x).double()
    y, summary = secure_forward(model, x)
    err = (y - ref).abs().max().item()
    assert err < 2e-3, err
    cos = (y * ref).sum(1) / (y.norm(dim=1) * ref.norm(dim=1))
    assert cos.min().item() > 0.9999
    assert summary["comparisons"] == 2 * sum(
        2 * int(np.prod(s)) for s in _clamp_shapes(model, 64)
    ) + 2 * approx.l2_comparisons(1)


def _clamp_shapes(model: nn.Module, res: int) -> list[list[int]]:
    arch, _ = split_model(model, (3, res, res))
    shapes: list[list[int]] = []

    def run(layers):
        for s in layers:
            if s["type"] == "clamp":
                shapes.append(s["in_shape"])
            if s["type"] == "residual":
                run(s["body"])

    run(arch["layers"])
    return shapes
