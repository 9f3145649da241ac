"""protocols.checked_nn: checked CNN inference (conv, depthwise conv, BN, ReLU, ReLU6, pooling, residual,
linear) equals plaintext torch within the fixed-point tolerance, passes its proof, and a server that
corrupts one message anywhere in it is rejected before any output is revealed."""

from __future__ import annotations

import torch
from dzk_faults import assert_rejected, corrupt_send, outcomes
from torch import nn

from client.model import Residual, describe_model, split_model
from protocols.checked_nn import checked_forward
from protocols.dzk import ProductLog, verify_products
from protocols.layers import plain_forward
from protocols.party import Party
from protocols.sharing import from_pair, reveal, share_fixed
from protocols.simulate import run_parties

TOLERANCE = 2e-3  # fixed point at 16 fractional bits through 8 layers, one ulp per truncation


def _model() -> nn.Module:
    g = torch.Generator().manual_seed(5)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU6(),
                      Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU6())),
                      nn.Conv2d(4, 6, 1), nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(6, 5))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        m[1].running_mean.copy_(torch.randn(4, generator=g) * 0.1)
        m[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
    return m.eval()


def _run(model: nn.Module, image: torch.Tensor):
    arch, per_server = split_model(model, tuple(image.shape[1:]))
    xs = share_fixed(image)

    def body(party: Party, weights, px):
        log = ProductLog(party)
        w = {k: from_pair(party, v, arch["frac_bits"]) for k, v in weights.items()}
        out = checked_forward(arch, w, from_pair(party, px, arch["frac_bits"]), log)
        verify_products(log)
        return reveal(out), party.comm.stats.messages_sent

    return run_parties(body, [[per_server[i], xs[i]] for i in range(3)])


def _outcomes(model: nn.Module, image: torch.Tensor, index: int) -> list:
    arch, per_server = split_model(model, tuple(image.shape[1:]))
    xs = share_fixed(image)

    def body(party: Party, weights, px):
        if party.id == 1:
            corrupt_send(party, index, 1 << 12)
        log = ProductLog(party)
        w = {k: from_pair(party, v, arch["frac_bits"]) for k, v in weights.items()}
        out = checked_forward(arch, w, from_pair(party, px, arch["frac_bits"]), log)
        verify_products(log)
        return reveal(out)

    return outcomes(body, [[per_server[i], xs[i]] for i in range(3)])


def test_a_checked_cnn_matches_plaintext_torch():
    model = _model()
    image = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = _run(model, image)[0][0].double() / 2**16
    arch, params = describe_model(model, (3, 12, 12))
    want = plain_forward(arch, params, image)
    assert torch.allclose(got, model.double()(image), atol=TOLERANCE)
    assert torch.allclose(got, want, atol=TOLERANCE)


def test_a_corrupted_message_anywhere_in_the_cnn_is_rejected():
    model = _model()
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sends = _run(model, image)[1][1] - 2  # the reveal's two messages are not proved
    for index in range(0, sends, max(1, sends // 6)):
        assert_rejected(_outcomes(model, image, index), bad=1, context=index)

def test_checked_l2_normalize_matches_torch_over_the_supported_range():
    """Rows with ||x||^2 from 2^-7 to 2^23 (the semi-honest range and tolerance: 4e-5 + 3e-5 / ||x||)."""
    from protocols.checked_nn import checked_l2_normalize

    g = torch.Generator().manual_seed(3)
    rows = torch.randn(8, 16, generator=g, dtype=torch.float64)
    scales = 2.0 ** torch.linspace(-3.5, 11.5, 8, dtype=torch.float64)
    x = rows / rows.norm(dim=1, keepdim=True) * scales.view(-1, 1)
    xs = share_fixed(x)

    def body(party: Party, px):
        log = ProductLog(party)
        y = checked_l2_normalize(from_pair(party, px, 16), log)
        verify_products(log)
        return reveal(y)

    got = run_parties(body, [[xs[i]] for i in range(3)])[0].double() / 2**16
    want = x / x.norm(dim=1, keepdim=True)
    bound = 4e-5 + 3e-5 / scales.view(-1, 1) + 2**-16
    assert bool(((got - want).abs() <= bound).all()), (got - want).abs().max()


def test_relu6_is_exact_with_one_product_per_value():
    """The checked ReLU6 (``clamp``): below, at and between the bounds, at and above 6, exactly the fixed-point
    clamp; ONE checked product per value after the comparisons (not one per ReLU), and a corrupted message of
    any party in it is rejected naming that party."""
    from protocols import checked_nn as CN

    f = 16
    x = torch.tensor([-50.0, -1e-4, 0.0, 1e-4, 2.5, 5.9999, 6.0, 6.0001, 300.0, -(2.0**14), 2.0**14 - 1])
    xs = share_fixed(x.double())

    def body(party: Party, px, bad: int | None = None, index: int = -1):
        if party.id == bad:
            corrupt_send(party, index, 1)
        log = ProductLog(party)
        y = CN._clamp(from_pair(party, px, f), 0.0, 6.0, f, log)
        products = sum(e.p.x_lo.numel() for e in log.entries if getattr(getattr(e, "p", None), "kind", "") == "mul"
                       and e.p.terms == ((True, True),) * 3)
        verify_products(log)
        return reveal(y), products

    out = run_parties(body, [[xs[i]] for i in range(3)])
    want = torch.clamp(torch.round(x.double() * 2**f), 0, 6 * 2**f).long()
    assert torch.equal(out[0][0], want) and out[0][1] == x.numel()
    for bad in range(3):
        assert_rejected(outcomes(body, [[xs[i], bad, 3] for i in range(3)]), bad, bad)
